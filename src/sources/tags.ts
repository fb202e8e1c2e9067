// The tag source: `eni-dpdk:*` instance tags (IMDS, else EC2 DescribeTags) as Layers.
import { schema, type Layer } from "../config/model.js";
import { FORBIDDEN_KEY_MESSAGE, isForbiddenKey, nullRecord, own } from "../core/records.js";
import { InputError, type Problem } from "../core/errors.js";
import { type Source } from "./source.js";
import { readTags } from "../cloud/imds.js";
import { describeInstanceTags } from "../cloud/ec2.js";

export const TAG_PREFIX = "eni-dpdk:";

/**
 * Instance tags: `eni-dpdk:eni:<name>` = "device_index=1;subnet_id=subnet-…;dpdk.driver=vfio-pci",
 * and `eni-dpdk:dpdk|sriov|service|kubernetes` = "key=value;…". Lists are comma-separated; nested
 * keys dotted. Keys avoid "/" because IMDS cannot expose them.
 */
export function tagLayers(tags: Record<string, string>): Layer[] {
  const layers: Layer[] = [];
  const problems: Problem[] = [];
  for (const key of Object.keys(tags).sort()) {
    if (!key.startsWith(TAG_PREFIX)) continue;
    const source = `tag ${key}`;
    const rest = key.slice(TAG_PREFIX.length);
    const value = own(tags, key)!;
    const parsed = parseTagValue(
      value,
      source,
      rest.startsWith("eni:") ? `eni.${rest.slice(4)}` : rest,
      problems,
    );
    if (!parsed) continue;
    if (rest.startsWith("eni:")) {
      const name = rest.slice(4);
      const named = own(parsed, "name");
      if (named !== undefined && named !== name) {
        problems.push({
          source,
          key: "name",
          message: `the ENI name comes from the tag key ("${name}"); remove name= from the value`,
        });
        continue;
      }
      layers.push({
        source,
        origin: { source: "tags", name: key },
        stringly: true,
        data: { eni: [{ ...parsed, name }] },
      });
    } else if (own(schema, rest)) {
      layers.push({
        source,
        origin: { source: "tags", name: key },
        stringly: true,
        data: { [rest]: parsed },
      });
    } else {
      const known = [...Object.keys(schema).map((k) => TAG_PREFIX + k), `${TAG_PREFIX}eni:<name>`];
      const why = isForbiddenKey(rest)
        ? `"${rest}" ${FORBIDDEN_KEY_MESSAGE}`
        : "unknown eni-dpdk tag";
      problems.push({ source, key, message: `${why}; expected one of ${known.join(", ")}` });
    }
  }
  if (problems.length) throw new InputError(problems);
  return layers;
}

/**
 * `a=1;b.c=2` → {a: "1", b: {c: "2"}} (null-prototype records). Every key path is checked: no empty
 * segment, no Object.prototype name, no key set twice, and no key both a value and a table.
 * Whitespace around `;`, `=` and `.` is ignored.
 */
function parseTagValue(
  value: string,
  source: string,
  keyPrefix: string,
  problems: Problem[],
): Record<string, unknown> | undefined {
  const out = nullRecord();
  /** dotted key → "value" or "table", for the repeat and shape checks */
  const seen = new Map<string, "value" | "table">();
  let ok = true;
  const bad = (key: string, message: string) => {
    problems.push({ source, key: `${keyPrefix}.${key}`, message });
    ok = false;
  };
  for (const pair of value.split(";")) {
    if (pair.trim() === "") continue;
    const i = pair.indexOf("=");
    if (i <= 0) {
      bad(pair.trim(), `expected key=value, got "${pair.trim()}"`);
      continue;
    }
    const dotted = pair.slice(0, i).trim();
    const keyPath = dotted.split(".").map((k) => k.trim());
    if (keyPath.some((k) => k === "")) {
      bad(
        dotted,
        `empty key segment in "${dotted}"; expected names joined by single dots, e.g. dpdk.driver`,
      );
      continue;
    }
    const forbidden = keyPath.find(isForbiddenKey);
    if (forbidden) {
      bad(dotted, `unknown key: "${forbidden}" ${FORBIDDEN_KEY_MESSAGE}`);
      continue;
    }
    const conflict = shapeConflict(seen, keyPath);
    if (conflict) {
      bad(dotted, conflict);
      continue;
    }
    let node = out;
    keyPath.slice(0, -1).forEach((k, depth) => {
      seen.set(keyPath.slice(0, depth + 1).join("."), "table");
      node = (own(node, k) as Record<string, unknown> | undefined) ?? (node[k] = nullRecord());
    });
    seen.set(keyPath.join("."), "value");
    node[keyPath.at(-1)!] = pair.slice(i + 1).trim();
  }
  return ok ? out : undefined;
}

/** Why setting `keyPath` clashes with keys set earlier in the same tag value (undefined when it does not). */
function shapeConflict(
  seen: Map<string, "value" | "table">,
  keyPath: string[],
): string | undefined {
  const full = keyPath.join(".");
  const was = seen.get(full);
  if (was === "value") return `"${full}" is set twice in this tag value; set each key once`;
  if (was === "table")
    return `"${full}" is set as a value, but "${full}.…" keys are also set; use one form`;
  for (let n = 1; n < keyPath.length; n++) {
    const prefix = keyPath.slice(0, n).join(".");
    if (seen.get(prefix) === "value")
      return `"${full}" descends into "${prefix}", which is already set as a value; use one form`;
  }
  return undefined;
}

/**
 * IMDS's instance tags when the instance exposes them; otherwise (the usual case on EKS, where keys
 * with "/" keep the option off) EC2 DescribeTags for the instance's own id.
 */
export const tagSource: Source = {
  name: "tags",
  needsInstance: true,
  async provide(ctx) {
    const inst = ctx.instance!;
    let tags = await readTags(inst.imds);
    if (tags === undefined) {
      ctx.log.info("instance metadata tags are disabled; reading tags with EC2 DescribeTags");
      tags = await describeInstanceTags(await inst.ec2(), (await inst.identity()).instanceId, {
        deadline: inst.deadline,
        log: ctx.log,
      });
    }
    const layers = tagLayers(tags);
    return { layers, note: `${layers.length} eni-dpdk tag(s)` };
  },
};
