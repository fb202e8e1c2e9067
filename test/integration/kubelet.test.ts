// What kubelet meets when nodeadm-run starts it, through the built CLI on an EKS-like node (nodeadm
// and /etc/eks/nodeadm.d present): the maxPods drop-in (plan, apply, status, reset, a maxPods of
// the user's, kill -9 at its rename) and the hugepages a DPDK app needs.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { MAX_PODS_DROPIN, NODEADM_DROPIN_DIR } from "../../src/host/nodeadm-dropin.js";
import { renderUserData } from "../../src/sources/mime.js";
import {
  baseToml,
  diffSnapshots,
  lastError,
  renameTargets,
  runCli,
  snapshotRoot,
  world,
} from "../support/harness.js";

// c6in.4xlarge (the simulated instance): 8 ENIs × 29 + 2 = 234 for nodeadm; baseToml takes 2 of them
const EXPECTED = 6 * 29 + 2;
const HUGEPAGES = "[dpdk]\nhugepages_2m = 64\n";

t.test(
  "maxPods: plan shows it, apply writes it once, status reports it, reset removes it",
  async (t) => {
    const w = await world(t, { configToml: baseToml(HUGEPAGES), nodeadm: true });
    const file = w.sim.p(MAX_PODS_DROPIN);
    const plan = await runCli(w, ["plan"]);
    t.equal(plan.code, 0, lastError(plan));
    t.match(
      plan.stdout,
      new RegExp(
        `kubelet write-max-pods\\s+${MAX_PODS_DROPIN}  maxPods ${EXPECTED} for nodeadm \\(alone it would set 234\\): 6 of 8 ENIs left to the VPC CNI \\(data1, kern1 are eni-dpdk's\\)`,
      ),
    );
    t.same(readdirSync(w.sim.p(NODEADM_DROPIN_DIR)), [], "plan wrote nothing");

    const apply = await runCli(w, ["apply"]);
    t.equal(apply.code, 0, lastError(apply));
    t.ok(
      apply.log.some(
        (l) => l.msg === "kubelet maxPods drop-in written" && l.max_pods === `${EXPECTED}`,
      ),
    );
    t.match(
      readFileSync(file, "utf8"),
      new RegExp(`^# eni-dpdk:max-pods:[^]*\n      maxPods: ${EXPECTED}\n$`),
    );
    const mtime = statSync(file).mtimeMs;

    const status = await runCli(w, ["status"]);
    t.match(
      status.stdout,
      new RegExp(
        `kubelet maxPods:\\s+${EXPECTED}, set by ${MAX_PODS_DROPIN} \\(nodeadm alone: 234\\)`,
      ),
    );
    t.match(
      status.stdout,
      /maxPods: kubelet's maxPods for the ENIs the VPC CNI can use\. For c6in\.4xlarge/,
    );
    const json = JSON.parse((await runCli(w, ["status", "--json"])).stdout);
    t.match(json.host.maxPods, {
      path: MAX_PODS_DROPIN,
      dropIn: "ours",
      maxPods: EXPECTED,
      nodeadmMaxPods: 234,
    });

    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0);
    t.match(again.stderr, /msg="kubelet done" stage=kubelet took_ms=\d+ actions=0/);
    t.equal(statSync(file).mtimeMs, mtime, "a second apply leaves the drop-in alone");

    // someone else's drop-in beside ours survives reset
    writeFileSync(w.sim.p(`${NODEADM_DROPIN_DIR}/10-theirs.yaml`), "kind: NodeConfig\n");
    const reset = await runCli(w, ["reset"]);
    t.equal(reset.code, 0, lastError(reset));
    t.match(reset.stdout, new RegExp(`removed ${MAX_PODS_DROPIN}`));
    t.same(readdirSync(w.sim.p(NODEADM_DROPIN_DIR)), ["10-theirs.yaml"]);
    const after = JSON.parse((await runCli(w, ["status", "--json"])).stdout);
    t.equal(after.host.maxPods.dropIn, "none");
  },
);

t.test("maxPods: the user's NodeConfig sets it; eni-dpdk steps back and says so", async (t) => {
  const w = await world(t, { configToml: baseToml(HUGEPAGES), nodeadm: true });
  t.equal((await runCli(w, ["apply"])).code, 0);
  const nodeConfig = [
    "apiVersion: node.eks.aws/v1alpha1",
    "kind: NodeConfig",
    "spec:",
    "  cluster: { name: c, apiServerEndpoint: https://example.com, certificateAuthority: Y2E= }",
    "  kubelet:",
    "    config:",
    "      maxPods: 500",
    "",
  ].join("\n");
  w.imds.instance.userData = renderUserData(nodeConfig, "[dpdk]\nhugepages_2m = 64\n");
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 0, lastError(r));
  t.notOk(readdirSync(w.sim.p(NODEADM_DROPIN_DIR)).length, "ours is removed");
  t.ok(
    r.log.some(
      (l) =>
        l.level === "warn" &&
        /spec\.kubelet\.config\.maxPods = 500 in user-data part 1 .* is more than the 176 pods the 6 ENIs left to the VPC CNI can address/.test(
          l.msg,
        ),
    ),
    "the too-high value is told",
  );
  const status = JSON.parse((await runCli(w, ["status", "--json"])).stdout);
  t.match(status.host.maxPods, { dropIn: "none", detail: /maxPods is yours/ });
});

t.test("maxPods: kill -9 at the drop-in's rename; nodeadm never sees half a file", async (t) => {
  const probe = await world(t, { configToml: baseToml(HUGEPAGES), nodeadm: true });
  const renames = await renameTargets(probe, ["apply"]);
  const at = renames.indexOf(MAX_PODS_DROPIN);
  t.ok(at >= 0, `apply renames onto the drop-in (${renames.join(", ")})`);

  const w = await world(t, { configToml: baseToml(HUGEPAGES), nodeadm: true });
  const killed = await runCli(w, ["apply"], { killAt: { syscall: "rename", when: at + 1 } });
  t.equal(killed.signal, "SIGKILL", killed.stderr.slice(-300));
  const left = readdirSync(w.sim.p(NODEADM_DROPIN_DIR));
  t.equal(left.length, 1, "only the temp file is there");
  t.match(left[0], /^\.00-eni-dpdk-max-pods\.yaml\.\d+\.\d+\.tmp$/);
  t.notMatch(left[0], /\.(ya?ml|json)$/i, "a name nodeadm does not read");
  t.match(
    readFileSync(path.join(w.sim.p(NODEADM_DROPIN_DIR), left[0]), "utf8"),
    /maxPods: \d+\n$/,
    "fsynced whole before the rename",
  );

  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 0, lastError(r));
  t.same(readdirSync(w.sim.p(NODEADM_DROPIN_DIR)), ["00-eni-dpdk-max-pods.yaml"], "temp cleaned");
  const before = snapshotRoot(w.root);
  t.equal((await runCli(w, ["apply"])).code, 0);
  t.same(
    diffSnapshots(before, snapshotRoot(w.root)).filter(
      (d) => !/run\/eni-dpdk\/(status|unchanged)\.json/.test(d),
    ),
    [],
    "a further apply changes nothing",
  );
});

t.test(
  "hugepages: bound without any, apply warns, Status says so, status gives the fix",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const plan = await runCli(w, ["plan"]);
    t.ok(
      plan.log.some(
        (l) => l.level === "warn" && l.msg.startsWith("no hugepages: none are reserved"),
      ),
      "plan warns before anything is bound",
    );
    const apply = await runCli(w, ["apply"]);
    t.equal(apply.code, 0, lastError(apply));
    const warn = apply.log.find((l) => l.level === "warn" && l.msg.includes("no hugepages"));
    t.equal(
      warn?.msg,
      'no hugepages: none are reserved (2M: 0, 1G: 0) while 1 device is on a DPDK driver; a DPDK app stops with "No free 2048 kB hugepages reported"',
    );
    const ready = apply.log.find((l) => l.msg.startsWith("ready: "));
    t.match(ready?.msg, /; WARNING: no hugepages \(none reserved\) \(1 warning\)$/);
    const doc = JSON.parse(readFileSync(w.sim.p("/run/eni-dpdk/status.json"), "utf8"));
    t.match(doc.apply.summary, /WARNING: no hugepages \(none reserved\)/);
    const status = await runCli(w, ["status"]);
    t.match(status.stdout, /^ {2}fix: set \[dpdk\]\.hugepages_2m/m);

    // reserved through the config: the warning goes, the pages are reported per node
    w.writeConfig(baseToml(HUGEPAGES));
    const fixed = await runCli(w, ["apply"]);
    t.notOk(fixed.log.some((l) => l.msg.includes("no hugepages")));
    t.match(
      (await runCli(w, ["status"])).stdout,
      /Hugepages:\s+2M: 64 of 64 requested, 64 free; node0 64/,
    );
    // hugetlbfs unmounted: the other form of the same warning
    w.sim.setHugetlbfs(false);
    const unmounted = await runCli(w, ["apply"]);
    t.ok(
      unmounted.log.some(
        (l) =>
          l.level === "warn" && l.msg.startsWith("no hugepages usable: no hugetlbfs is mounted"),
      ),
    );
  },
);
