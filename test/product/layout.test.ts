// The layout docs/architecture.md promises, read from the code's own import statements: imports
// point down the folder order, vendor libraries load only through core/lazy.ts, the simulation is
// imported by no product module, and scripts/ never imports test/.
import t from "tap";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { REPO } from "../support/repo.js";

/** Top to bottom: a module may import from its own folder or one further down. */
const ORDER = ["", "commands", "reconcile", "sources", "cloud", "host", "config", "core"];
const VENDOR = /^(@aws-sdk\/|@smithy\/|yaml$|toml$|yargs|sd-notify$)/;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory()
      ? files(path.join(dir, d.name))
      : d.name.endsWith(".ts") || d.name.endsWith(".mjs")
        ? [path.join(dir, d.name)]
        : [],
  );
}

interface Import {
  spec: string;
  typeOnly: boolean;
  dynamic: boolean;
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, "utf8");
  const found: Import[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s+(type\s+)?[^;]*?\sfrom\s+"([^"]+)"/gms))
    found.push({ spec: m[2], typeOnly: Boolean(m[1]), dynamic: false });
  for (const m of text.matchAll(/^import\s+"([^"]+)"/gm))
    found.push({ spec: m[1], typeOnly: false, dynamic: false });
  for (const m of text.matchAll(/(?<![.\w])import\(\s*"([^"]+)"\s*\)/g))
    found.push({
      spec: m[1],
      typeOnly: text.slice(m.index - 7, m.index) === "typeof ",
      dynamic: true,
    });
  return found;
}

const folderOf = (file: string) => {
  const rel = path.relative(path.join(REPO, "src"), file).split(path.sep);
  return rel.length === 1 ? "" : rel[0];
};

t.test(
  "imports point down the folder order; the simulation is not imported by the product",
  async (t) => {
    const up: string[] = [];
    const simUsers: string[] = [];
    for (const file of files(path.join(REPO, "src"))) {
      const from = folderOf(file);
      if (from === "sim") continue; // the emulators may use the product's own modules
      for (const imp of importsOf(file)) {
        if (!imp.spec.startsWith(".")) continue;
        const to = folderOf(path.resolve(path.dirname(file), imp.spec));
        const where = `${path.relative(REPO, file)} → ${imp.spec}`;
        if (to === "sim") simUsers.push(where);
        else if (ORDER.indexOf(to) < ORDER.indexOf(from)) up.push(where);
      }
    }
    t.ok(files(path.join(REPO, "src")).length > 40, "the tree was read");
    t.same(up, [], "no import runs up the folder order");
    t.same(simUsers, [], "no product module imports src/sim");
  },
);

t.test("vendor libraries are loaded only through core/lazy.ts", async (t) => {
  // core/vendor-*.ts name the parts of a package the bundler may keep; they are part of the fence,
  // so lazy.ts alone may import them, and only on demand.
  const isVendorFile = (rel: string) => /^src\/core\/vendor-[\w-]+\.ts$/.test(rel);
  const outside: string[] = [];
  const vendorFileUsers: string[] = [];
  let fenced = 0;
  for (const file of files(path.join(REPO, "src"))) {
    if (folderOf(file) === "sim") continue;
    const rel = path.relative(REPO, file);
    for (const imp of importsOf(file)) {
      const target = imp.spec.startsWith(".")
        ? path.relative(REPO, path.resolve(path.dirname(file), imp.spec)).replace(/\.js$/, ".ts")
        : "";
      if (isVendorFile(target) && !imp.typeOnly) {
        if (rel === "src/core/lazy.ts" && imp.dynamic) fenced++;
        else vendorFileUsers.push(`${rel}: ${imp.spec}`);
        continue;
      }
      if (!VENDOR.test(imp.spec) || imp.typeOnly || isVendorFile(rel)) continue;
      if (rel === "src/core/lazy.ts" && imp.dynamic) fenced++;
      else outside.push(`${rel}: ${imp.spec}`);
    }
  }
  t.ok(fenced >= 6, `core/lazy.ts loads ${fenced} vendor modules, each on demand`);
  t.same(outside, [], "no other module imports a vendor library for its value");
  t.same(vendorFileUsers, [], "core/vendor-*.ts are imported only by core/lazy.ts, on demand");
});

t.test("scripts/ imports src/, never test/", async (t) => {
  const offending = files(path.join(REPO, "scripts")).flatMap((file) =>
    importsOf(file)
      .filter(
        (imp) =>
          imp.spec.startsWith(".") &&
          path.resolve(path.dirname(file), imp.spec).startsWith(path.join(REPO, "test") + path.sep),
      )
      .map((imp) => `${path.relative(REPO, file)} → ${imp.spec}`),
  );
  t.same(offending, []);
});
