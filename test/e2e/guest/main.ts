// The guest program (bundled to /opt/e2e/guest.mjs, run by init as the only workload): sets up the
// emulated instance (primary NIC with the default route, IMDS and EC2 emulators unless the host runs
// them), then runs this boot's scenario steps against the real CLI bundle and the real kernel.
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import type { Ec2Emulator } from "../../../src/sim/ec2.js";
import { bdfOf, GUEST_GATEWAY, GUEST_PRIMARY_IP, type NicSpec } from "../topology.js";
import { CLI_AWS_ENV, makeEc2, makeImds } from "../world.js";
import {
  checkBoundVfio,
  checkSriov,
  checkStatusAgrees,
  configToml,
  nic,
  plan,
  S1_ENIS,
  sameNic,
  snapshot,
  writeConfig,
} from "./common.js";
import {
  dpdkSetup,
  s10TestpmdForwards,
  s11DevbindAgrees,
  s12bBindingScriptEnv,
  s12BindingScript,
  s13ReconcileUnderApp,
  s14NoHugepages,
} from "./dpdk.js";
import {
  cli,
  cliCountingWaits,
  cliKilledAt,
  fileStamp,
  fmtNic,
  nicState,
  parseJson,
  PCIDP,
  read,
  record,
  run,
  setCliEnv,
  settleWaits,
  STATE,
  stateOf,
  STATUS,
  Step,
  tail,
} from "./lib.js";

let ec2: Ec2Emulator | undefined;

/** Bring every NIC up; the primary gets the address and the default route (what makes it the primary). */
async function setupNetwork(): Promise<string[]> {
  const out: string[] = [];
  for (const n of plan.nics) {
    const s = stateOf(n);
    if (!s.netdev) continue;
    await run(["/sbin/ip", "link", "set", "dev", s.netdev, "up"]);
    if (n.deviceNumber === 0) {
      await run(["/sbin/ip", "addr", "add", `${GUEST_PRIMARY_IP}/24`, "dev", s.netdev]);
      await run(["/sbin/ip", "route", "add", "default", "via", GUEST_GATEWAY, "dev", s.netdev]);
    }
  }
  out.push(
    ...(await run(["/sbin/ip", "-br", "addr"])).stdout.trim().split("\n"),
    ...(await run(["/sbin/ip", "route"])).stdout.trim().split("\n"),
  );
  return out;
}

async function startEmulators(): Promise<{ imdsUrl: string; ec2Url: string }> {
  if (plan.hostImds && plan.hostEc2) return { imdsUrl: plan.hostImds, ec2Url: plan.hostEc2 };
  const imds = await makeImds(plan.nics).start();
  ec2 = await makeEc2(plan.nics, plan.external ?? []).start();
  return { imdsUrl: imds.url, ec2Url: ec2.url };
}

const ec2Calls = () => ec2?.requests.length ?? 0;
const ec2Actions = (from: number) =>
  (ec2?.requests.slice(from) ?? []).reduce<Record<string, number>>(
    (m, r) => ((m[r.action] = (m[r.action] ?? 0) + 1), m),
    {},
  );

// ---- scenarios -------------------------------------------------------------------------------------

async function s5Guards(): Promise<Step> {
  const st = new Step(
    "5",
    "guards: primary NIC and a NIC with a default route are refused, untouched",
  );
  const routed = nic("routed");
  const rs = stateOf(routed);
  // give "routed" an address and an IPv4 default route of its own (higher metric than the primary's)
  await run(["/sbin/ip", "addr", "add", "10.0.3.15/24", "dev", rs.netdev!]);
  await run([
    "/sbin/ip",
    "route",
    "add",
    "default",
    "via",
    "10.0.3.1",
    "dev",
    rs.netdev!,
    "metric",
    "500",
  ]);
  st.note("routes: " + (await run(["/sbin/ip", "route"])).stdout.trim().replace(/\n/g, " ; "));
  const before = snapshot();
  const primary = nic("primary");

  const cases: { label: string; toml: string; guarded: NicSpec; why: RegExp }[] = [
    {
      label: "device_index = 0 (the primary ENI)",
      toml: configToml([{ name: "grab-primary", index: 0, dpdk: true }]),
      guarded: primary,
      why: /device_index.*primary/,
    },
    {
      label: `pci_address = ${bdfOf(primary)} (the primary's BDF) on ENI dpdk1`,
      toml: configToml([{ name: "dpdk1", index: 1, dpdk: true, pci: bdfOf(primary) }]),
      guarded: primary,
      why: new RegExp(`${bdfOf(primary).replace(/\./g, "\\.")}.*(primary|MAC|mac)|pci_address`),
    },
    {
      label: `ENI routed (device 4) whose netdev ${rs.netdev} carries a default route`,
      toml: configToml([{ name: "routed", index: 4, dpdk: true }]),
      guarded: routed,
      why: /default route/,
    },
  ];
  for (const c of cases) {
    writeConfig(c.toml);
    const r = await cli("apply");
    st.note(`apply with ${c.label}: exit ${r.code} (${r.ms} ms)`);
    st.evidence.push(...tail(r.stderr, 3));
    st.check(r.code !== 0, `refused (exit ${r.code})`);
    st.check(c.why.test(r.stderr), `the refusal says why (stderr matches ${c.why})`);
    const g = stateOf(c.guarded);
    st.check(
      sameNic(g, before[c.guarded.name]) && (g.override === "" || g.override === "(null)"),
      `${c.guarded.name} untouched: ${fmtNic(c.guarded.name, g)}`,
    );
  }
  const after = snapshot();
  const changed = plan.nics.filter((n) => !sameNic(before[n.name], after[n.name]));
  st.check(
    changed.length === 0,
    `no NIC changed by the refused applies${changed.length ? `: ${changed.map((n) => fmtNic(n.name, after[n.name])).join("; ")}` : ""}`,
  );
  return st;
}

async function s1Bind(): Promise<Step> {
  const st = new Step(
    "1",
    "bind: two DPDK ENIs on vfio-pci (noiommu), primary untouched, kernel ENI MTU, SR-IOV config, status",
  );
  const before = snapshot();
  for (const n of plan.nics) st.note("before: " + fmtNic(n.name, before[n.name]));
  writeConfig(configToml(S1_ENIS));
  const c0 = ec2Calls();
  const r = await cli("apply");
  st.note(`apply: exit ${r.code} in ${r.ms} ms; EC2 calls ${JSON.stringify(ec2Actions(c0))}`);
  st.evidence.push(...tail(r.stderr, 6));
  st.check(r.code === 0, "apply exits 0");
  checkBoundVfio(st, nic("dpdk1"));
  checkBoundVfio(st, nic("dpdk2"));
  const p = stateOf(nic("primary"));
  st.check(
    sameNic(p, before.primary) && !!p.netdev && p.driver === "virtio-pci",
    `primary untouched: ${fmtNic("primary", p)}`,
  );
  const routes = (await run(["/sbin/ip", "route", "show", "default"])).stdout.trim();
  st.check(
    routes.includes(`dev ${p.netdev}`),
    `primary still carries the default route (${routes.split("\n")[0]})`,
  );
  const k = stateOf(nic("kern1"));
  st.check(
    k.driver === "e1000" && !!k.netdev && k.mtu === 8500 && k.up === true,
    `kernel ENI up with MTU 8500: ${fmtNic("kern1", k)}`,
  );
  checkSriov(st, [nic("dpdk1"), nic("dpdk2")]);
  await checkStatusAgrees(st, [nic("dpdk1"), nic("dpdk2")], [nic("primary"), nic("kern1")]);
  const status = parseJson(read(STATUS)) as { apply?: { summary?: string } } | undefined;
  st.note(`${STATUS} apply.summary: ${status?.apply?.summary}`);
  st.note(`kernel taint: ${read("/proc/sys/kernel/tainted")?.trim()}`);
  return st;
}

async function s2Idempotent(): Promise<Step> {
  const st = new Step("2", "idempotent: a second apply changes nothing");
  const before = snapshot();
  const files = [PCIDP, STATE, "/etc/systemd/network"];
  const stamps = files.map(fileStamp);
  const stateText = read(STATE) ?? "";
  const stateBefore = parseJson(stateText);
  const c0 = ec2Calls();
  const r = await cli("apply");
  st.note(
    `second apply: exit ${r.code} in ${r.ms} ms; EC2 calls ${JSON.stringify(ec2Actions(c0))}`,
  );
  st.evidence.push(...tail(r.stderr, 2));
  st.check(r.code === 0, "apply exits 0");
  const status = parseJson(read(STATUS)) as
    { apply?: { actions?: unknown[]; summary?: string } } | undefined;
  st.check(
    Array.isArray(status?.apply?.actions) && status.apply.actions.length === 0,
    `status.json apply.actions is empty (${JSON.stringify(status?.apply?.actions ?? null).slice(0, 300)})`,
  );
  st.note(`summary: ${status?.apply?.summary}`);
  st.check(existsSync(PCIDP) && existsSync(STATE), `${PCIDP} and ${STATE} exist`);
  files.forEach((f, i) =>
    st.check(
      fileStamp(f) === stamps[i],
      `${f} unchanged (sha256/mtime ${stamps[i]} → ${fileStamp(f)})`,
    ),
  );
  const diff = jsonDiff(stateBefore, parseJson(read(STATE)));
  if (diff.length) st.note(`state.json differences: ${diff.slice(0, 8).join("; ")}`);
  const stateLines = (read(STATE) ?? "").split("\n");
  const line = stateText.split("\n").findIndex((l, i) => l !== stateLines[i]);
  if (line >= 0)
    st.note(
      `state.json first differing line ${line + 1}: ${JSON.stringify(stateText.split("\n")[line])} → ${JSON.stringify(stateLines[line])}${diff.length ? "" : " (same JSON value, rewritten with different bytes)"}`,
    );
  const after = snapshot();
  for (const n of plan.nics)
    st.check(sameNic(before[n.name], after[n.name]), `${fmtNic(n.name, after[n.name])} unchanged`);
  const mutating = (ec2?.requests.slice(c0) ?? []).filter((q) => !q.action.startsWith("Describe"));
  st.check(mutating.length === 0, `no mutating EC2 call (${mutating.length})`);

  // The second apply found nothing to do and kept the record of its reads: the third reads them
  // all again on this kernel (the values of a real sysfs, not the simulation's) and plans nothing.
  const c1 = ec2Calls();
  const third = await cli("apply");
  st.note(`third apply: exit ${third.code} in ${third.ms} ms`);
  st.evidence.push(...tail(third.stderr, 1));
  st.check(third.code === 0, "third apply exits 0");
  st.check(
    /unchanged_since=/.test(third.stderr) && !/msg="sources done"/.test(third.stderr),
    "third apply: every input read as the second apply found it; no stage planned",
  );
  const unchangedStatus = parseJson(read(STATUS)) as
    { apply?: { unchangedSince?: string } } | undefined;
  st.check(
    typeof unchangedStatus?.apply?.unchangedSince === "string",
    `status.json says since when nothing changed (${unchangedStatus?.apply?.unchangedSince})`,
  );
  const afterThird = snapshot();
  for (const n of plan.nics)
    st.check(
      sameNic(after[n.name], afterThird[n.name]),
      `${fmtNic(n.name, afterThird[n.name])} unchanged by the third apply`,
    );
  st.check(ec2Calls() === c1, `third apply: no EC2 call (${ec2Calls() - c1})`);
  return st;
}

function jsonDiff(a: unknown, b: unknown, at = ""): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  if (
    a &&
    b &&
    typeof a === "object" &&
    typeof b === "object" &&
    !Array.isArray(a) &&
    !Array.isArray(b)
  ) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) =>
      jsonDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${at}.${k}`),
    );
  }
  return [`${at || "."}: ${JSON.stringify(a)?.slice(0, 80)} → ${JSON.stringify(b)?.slice(0, 80)}`];
}

/** Keep what survives a reboot on a real node (the state file, /etc) for the next boot. */
async function carry(): Promise<void> {
  const r = await run(
    [
      "/bin/tar",
      "-C",
      "/",
      "-cf",
      "/out/carry.tar",
      "var/lib/eni-dpdk",
      "etc/pcidp",
      "etc/eni-dpdk",
    ],
    {},
    30_000,
  );
  process.stdout.write(`E2E-CARRY exit=${r.code} ${r.stderr.trim()}\n`);
}

async function s3Reboot(): Promise<Step> {
  const st = new Step(
    "3",
    "reboot: devices back on kernel drivers; apply with the kept state rebinds them without EC2",
  );
  st.check(existsSync(STATE), `${STATE} kept from the first boot`);
  for (const [name, drv] of [
    ["dpdk1", "e1000"],
    ["dpdk2", "e1000e"],
  ] as const) {
    const s = stateOf(nic(name));
    st.check(
      s.driver === drv && !!s.netdev && s.mac === nic(name).mac,
      `after reboot: ${fmtNic(name, s)}`,
    );
  }
  const c0 = ec2Calls();
  // The steady state's rebind, with its timer waits counted: the benchmark's simulated kernel
  // answers a sysfs write a moment after it returns, so each check of its effect sleeps there
  // (docs/benchmarks.md); this is the same count on a real kernel.
  const r = await cliCountingWaits("apply");
  st.note(`apply: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 5));
  st.check(r.code === 0, "apply exits 0");
  const waits = settleWaits(r.stderr);
  st.note(
    waits
      ? `timer waits under 1 s while rebinding 2 devices on a real kernel: ${waits.n} (${waits.ms.toFixed(1)} ms summed, ${waits.anyMs.toFixed(1)} ms with one or more asleep)`
      : "no SETTLE_WAITS line from the preload",
  );
  checkBoundVfio(st, nic("dpdk1"));
  checkBoundVfio(st, nic("dpdk2"));
  st.check(
    ec2Calls() === c0,
    `no EC2 call (EC2 emulator saw ${ec2Calls() - c0} requests: ${JSON.stringify(ec2Actions(c0))})`,
  );
  const status = parseJson(read(STATUS)) as
    { apply?: { summary?: string; ec2Loaded?: boolean } } | undefined;
  st.note(`summary: ${status?.apply?.summary}; ec2Loaded=${status?.apply?.ec2Loaded}`);
  checkSriov(st, [nic("dpdk1"), nic("dpdk2")]);
  return st;
}

async function s4FailAfterUnbind(): Promise<Step> {
  const st = new Step(
    "4b",
    "forced failure after unbind: the NIC is back on its kernel driver with its netdev",
  );
  const routed = nic("routed");
  const before = stateOf(routed);
  const others = [nic("dpdk1"), nic("dpdk2")].map((n) => [n, stateOf(n)] as const);
  st.note("before: " + fmtNic("routed", before));
  // The binding script unbinds the NIC, then "fails" and exits 0 (as dpdk-devbind.py does on failed binds).
  writeConfig(
    configToml([...S1_ENIS, { name: "routed", index: 4, dpdk: true }], {
      binding_script: "/opt/e2e/failing-bind",
    }),
  );
  const r = await cli("apply");
  st.note(`apply: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 5));
  st.check(r.code === 1, `apply fails with exit 1 (got ${r.code})`);
  const log = read("/run/e2e-failing-bind.log") ?? "";
  st.check(
    log.includes(`unbound ${bdfOf(routed)}`),
    `the binding script really unbound ${bdfOf(routed)} (${log.trim().replace(/\n/g, "; ")})`,
  );
  const after = stateOf(routed);
  st.check(
    after.driver === before.driver &&
      after.netdev !== undefined &&
      after.mac === routed.mac &&
      (after.override === "" || after.override === "(null)"),
    `back on ${before.driver} with its netdev: ${fmtNic("routed", after)}`,
  );
  for (const [n, s] of others)
    st.check(sameNic(s, stateOf(n)), `${n.name} stayed bound: ${fmtNic(n.name, stateOf(n))}`);
  const status = parseJson(read(STATUS)) as
    { apply?: { error?: { message?: string } } } | undefined;
  st.note(`status.json apply.error: ${status?.apply?.error?.message?.slice(0, 300)}`);
  writeConfig(configToml(S1_ENIS));
  return st;
}

async function s8CrashMidBind(): Promise<Step> {
  const st = new Step(
    "8",
    "crash mid-bind on the real kernel: SIGKILL between unbind and probe; early and apply recover, nothing driverless",
  );
  const d1 = nic("dpdk1");
  writeConfig(configToml(S1_ENIS));
  const u = await cli("unbind", "dpdk1");
  st.check(
    u.code === 0 && stateOf(d1).driver === "e1000" && !!stateOf(d1).netdev,
    `dpdk1 back on e1000 first: ${fmtNic("dpdk1", stateOf(d1))}`,
  );
  const primaryBefore = stateOf(nic("primary"));
  const k = await cliKilledAt("/sys/bus/pci/drivers_probe", "write", "apply");
  st.note(
    `apply under strace, killed at its write to drivers_probe: exit ${k.code ?? k.signal} after ${k.ms} ms`,
  );
  st.check(
    k.code === 137 || k.signal === "SIGKILL",
    `the run was killed there (strace ended with ${k.code ?? k.signal})`,
  );
  const crashed = stateOf(d1);
  st.note(`after the kill: ${fmtNic("dpdk1", crashed)}`);
  st.check(
    crashed.driver === "none" && crashed.override === "vfio-pci",
    "the real kernel left dpdk1 driverless with driver_override=vfio-pci: the window is real",
  );
  const journal = read("/var/lib/eni-dpdk/inflight.json");
  st.note(`intent journal: ${journal?.trim().replace(/\s+/g, " ").slice(0, 300)}`);
  st.check(
    !!journal && journal.includes(bdfOf(d1)),
    "the intent was journalled before the first sysfs write",
  );
  const e = await cli("early");
  st.note(`early: exit ${e.code} in ${e.ms} ms`);
  st.evidence.push(...tail(e.stderr, 3));
  st.check(
    e.code === 0 && e.ms < 20_000,
    `early recovers and finishes without waiting out a deadline (${e.ms} ms)`,
  );
  st.check(
    stateOf(d1).driver !== "none",
    `early gave dpdk1 a driver back: ${fmtNic("dpdk1", stateOf(d1))}`,
  );
  const a = await cli("apply");
  st.note(`apply: exit ${a.code} in ${a.ms} ms`);
  st.evidence.push(...tail(a.stderr, 3));
  st.check(a.code === 0, "the next apply exits 0");
  checkBoundVfio(st, d1);
  checkBoundVfio(st, nic("dpdk2"));
  st.check(!existsSync("/var/lib/eni-dpdk/inflight.json"), "nothing left in flight");
  const driverless = plan.nics.filter((n) => stateOf(n).present && stateOf(n).driver === "none");
  st.check(
    driverless.length === 0,
    `no NIC without a driver${driverless.length ? `: ${driverless.map((n) => n.name).join(", ")}` : ""}`,
  );
  st.check(
    sameNic(primaryBefore, stateOf(nic("primary"))),
    `primary untouched: ${fmtNic("primary", stateOf(nic("primary")))}`,
  );
  checkSriov(st, [d1, nic("dpdk2")]);
  return st;
}

/**
 * A recorded device the kernel removed, as when its ENI is detached: early must skip it at once and
 * exit 0, not wait 10 s for it and fail the unit at every boot (as it did until 2026-12-07). The
 * full apply's forgetting of such an ENI needs IMDS to drop it: the integration tests show that,
 * with the emulators' detach.
 */
async function s15DeviceGone(): Promise<Step> {
  const st = new Step(
    "15",
    "a recorded device the kernel removed (its ENI detached): early skips it at once and exits 0",
  );
  const d2 = nic("dpdk2");
  const bdf = bdfOf(d2);
  st.check(stateOf(d2).driver === "vfio-pci", `dpdk2 bound first: ${fmtNic("dpdk2", stateOf(d2))}`);
  // the kernel's own removal of the PCI function, as a hot-unplug does
  writeFileSync(`/sys/bus/pci/devices/${bdf}/remove`, "1");
  st.check(!existsSync(`/sys/bus/pci/devices/${bdf}`), `${bdf} is gone from sysfs`);
  const e = await cli("early");
  st.note(`early: exit ${e.code} in ${e.ms} ms`);
  st.evidence.push(...tail(e.stdout, 3), ...tail(e.stderr, 2));
  st.check(e.code === 0, "early exits 0");
  st.check(
    e.stdout.includes(`skipped ${bdf} ${d2.mac.toLowerCase()} `) &&
      e.stdout.includes(`no PCI device at ${bdf}`),
    "early says it skipped the device, and why",
  );
  checkBoundVfio(st, nic("dpdk1"));
  return st;
}

/**
 * A recorded device on no driver, as when ena's probe failed at boot: no netdev shows its MAC, so
 * early must not bind it. It waits its bound for a driver, writes nothing to the device, exits 1
 * and says where to look; once the kernel probes it again, the next early binds it.
 */
async function s16Driverless(): Promise<Step> {
  const st = new Step(
    "16",
    "a recorded device on no driver (its kernel driver did not take it): early binds nothing there, says so, and binds it once it is probed again",
  );
  const d1 = nic("dpdk1");
  const bdf = bdfOf(d1);
  st.check(stateOf(d1).driver === "vfio-pci", `dpdk1 bound first: ${fmtNic("dpdk1", stateOf(d1))}`);
  // off vfio-pci, override cleared, no probe: on the bus with no driver, as after a failed probe
  writeFileSync("/sys/bus/pci/drivers/vfio-pci/unbind", bdf);
  writeFileSync(`/sys/bus/pci/devices/${bdf}/driver_override`, "\n");
  const before = stateOf(d1);
  st.check(
    before.driver === "none" && !before.netdev,
    `dpdk1 driverless, no netdev: ${fmtNic("dpdk1", before)}`,
  );
  const e = await cli("early");
  st.note(`early: exit ${e.code} in ${e.ms} ms`);
  st.evidence.push(...tail(e.stdout, 3), ...tail(e.stderr, 2));
  st.check(e.code === 1, "early exits 1");
  st.check(
    e.stdout.includes(`failed  ${bdf} ${d1.mac.toLowerCase()} `) &&
      e.stdout.includes("its kernel driver did not take it"),
    "early names the device and why",
  );
  st.check(e.ms >= 10_000, `it waited its bound for a driver first (${e.ms} ms)`);
  const after = stateOf(d1);
  st.check(
    after.driver === "none" && (after.override === "" || after.override === "(null)"),
    `nothing written to dpdk1: ${fmtNic("dpdk1", after)}`,
  );
  // docs/troubleshooting.md: probe it again; the next early (the next boot) binds it
  writeFileSync("/sys/bus/pci/drivers_probe", bdf);
  st.check(
    stateOf(d1).driver === "e1000" && !!stateOf(d1).netdev,
    `probed again: ${fmtNic("dpdk1", stateOf(d1))}`,
  );
  const again = await cli("early");
  st.note(`early again: exit ${again.code} in ${again.ms} ms`);
  st.check(again.code === 0, "the next early exits 0");
  checkBoundVfio(st, d1);
  return st;
}

async function s4NoNoiommu(): Promise<Step> {
  const st = new Step("4", "stock kernel without NOIOMMU: clear diagnosis, no device touched");
  const before = snapshot();
  writeConfig(configToml(S1_ENIS));
  const r = await cli("apply");
  st.note(`apply: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 4));
  st.check(r.code === 1, `apply fails with exit 1 (got ${r.code})`);
  st.check(
    /NOIOMMU/i.test(r.stderr) && /CONFIG_VFIO_NOIOMMU/.test(r.stderr),
    "the error names the missing NOIOMMU support (CONFIG_VFIO_NOIOMMU)",
  );
  st.check(
    !existsSync("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"),
    "the kernel really lacks the parameter (/sys/module/vfio/parameters/enable_unsafe_noiommu_mode absent)",
  );
  const after = snapshot();
  for (const n of plan.nics) {
    const a = after[n.name];
    st.check(
      sameNic(before[n.name], a) && !!a.netdev && (a.override === "" || a.override === "(null)"),
      `untouched: ${fmtNic(n.name, a)}`,
    );
  }
  const status = parseJson(read(STATUS)) as
    { apply?: { error?: { message?: string; next?: string } } } | undefined;
  st.note(
    `status.json apply.error: ${status?.apply?.error?.message?.slice(0, 250)} | next: ${status?.apply?.error?.next?.slice(0, 200)}`,
  );
  return st;
}

async function s6Hotplug(): Promise<Step> {
  const st = new Step(
    "6",
    "hot-plug first boot: EC2 attach → QMP device_add → service waits, verifies the MAC, binds",
  );
  writeConfig(configToml([{ name: "hot1", index: 1, dpdk: true, resource: "amazon.com/e2e_hot" }]));
  // watch for the hot-plugged netdev while apply runs (it disappears again when bound)
  const seen: string[] = [];
  const known = new Set(readdirSync("/sys/class/net"));
  const t0 = Date.now();
  const timer = setInterval(() => {
    for (const n of readdirSync("/sys/class/net")) {
      if (known.has(n)) continue;
      known.add(n);
      const mac = read(`/sys/class/net/${n}/address`)?.trim();
      const dev = read(`/sys/class/net/${n}/device/uevent`)?.match(/PCI_SLOT_NAME=(\S+)/)?.[1];
      seen.push(`${n} mac=${mac} bdf=${dev} at +${Date.now() - t0} ms`);
    }
  }, 100);
  const r = await cli("apply");
  clearInterval(timer);
  st.note(`apply: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 8));
  st.check(r.code === 0, "apply exits 0");
  const hp = parseJson(read("/out/hotplug.json")) as
    { mac?: string; eniId?: string; qmpAt?: number } | undefined;
  st.note(`host hot-plugged: ${JSON.stringify(hp)}`);
  st.check(
    seen.some((s) => hp?.mac && s.includes(`mac=${hp.mac}`)),
    `a netdev with the attached ENI's MAC appeared during apply: ${seen.join("; ") || "none"}`,
  );
  const hotBdfs = readdirSync("/sys/bus/pci/devices").filter((b) => !b.startsWith("0000:00:"));
  const s = hotBdfs.map((b) => nicState(b)).find((x) => x.ids === "8086:100e");
  st.note(
    s ? fmtNic("hot1", s) : `no hot-plugged e1000 (devices off bus 0: ${hotBdfs.join(", ")})`,
  );
  st.check(
    !!s && s.driver === "vfio-pci" && !!s.vfioNode?.includes("noiommu"),
    "the hot-plugged NIC is on vfio-pci with a noiommu node",
  );
  const state = parseJson(read(STATE)) as
    | {
        bindings?: Record<string, { bdf?: string }>;
        enis?: Record<string, { eniId?: string; mac?: string }>;
      }
    | undefined;
  const b = hp?.mac ? state?.bindings?.[hp.mac] : undefined;
  st.check(
    !!s && b?.bdf === s.bdf && state?.enis?.hot1?.eniId === hp?.eniId,
    `state.json: ${hp?.mac} (ENI ${state?.enis?.hot1?.eniId}) bound at ${b?.bdf}`,
  );
  if (s) {
    const doc = parseJson(read(PCIDP)) as
      { resourceList?: { resourceName?: string; selectors?: unknown }[] } | undefined;
    const entry = doc?.resourceList?.find((e) => e.resourceName === "e2e_hot");
    st.check(
      JSON.stringify(entry ?? {}).includes(s.bdf),
      `SR-IOV entry e2e_hot lists ${s.bdf}: ${JSON.stringify(entry ?? null).slice(0, 300)}`,
    );
  }
  return st;
}

/**
 * External mode: the NIC was there at boot, as an ENI the launch template attached (EC2 knows it at
 * its device index, untagged by eni-dpdk, DeleteOnTermination on). eni-dpdk must find it through IMDS,
 * bind it on the real kernel, record it as external, make zero EC2 requests, change nothing on a
 * second apply, and on `reset` unbind it without detaching or deleting it.
 */
async function s9External(): Promise<Step> {
  const st = new Step(
    "9",
    "external mode: a NIC cold-plugged as if by the launch template is bound with zero EC2 calls",
  );
  const ext = nic("ext1");
  const before = stateOf(ext);
  st.note("before: " + fmtNic("ext1", before));
  st.check(
    before.driver === "e1000" && !!before.netdev,
    "ext1 is on e1000 with its netdev at boot",
  );
  writeConfig(
    configToml([
      { name: "ext1", attach: "external", index: 1, dpdk: true, resource: "amazon.com/e2e_ext" },
    ]),
  );
  const c0 = ec2Calls();
  const p = await cli("plan");
  st.note(`plan: exit ${p.code}: ${p.stdout.trim().replace(/\n/g, " ; ")}`);
  st.check(
    p.code === 0 && /eni\s+use-external\s+ext1\s+external ENI/.test(p.stdout),
    "plan shows use-external for ext1",
  );
  const r = await cli("apply");
  st.note(`apply: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 6));
  st.check(r.code === 0, "apply exits 0");
  checkBoundVfio(st, ext);
  checkSriov(st, [ext], "e2e_ext");
  const state = parseJson(read(STATE)) as
    | { enis?: Record<string, { attach?: string; eniId?: string; createdByUs?: boolean }> }
    | undefined;
  st.check(
    state?.enis?.ext1?.attach === "external" &&
      state.enis.ext1.eniId === ext.interfaceId &&
      state.enis.ext1.createdByUs === false,
    `state.json records ext1 as external: ${JSON.stringify(state?.enis?.ext1)}`,
  );
  st.check(ec2Calls() === c0, `zero EC2 requests (${JSON.stringify(ec2Actions(c0))})`);

  const stamps = [PCIDP, STATE, "/etc/systemd/network"].map(fileStamp);
  const again = await cli("apply");
  st.check(again.code === 0, `second apply exits 0 (exit ${again.code})`);
  st.check(
    [PCIDP, STATE, "/etc/systemd/network"].map(fileStamp).join() === stamps.join(),
    "second apply changes no file",
  );
  st.check(ec2Calls() === c0, "second apply: still zero EC2 requests");

  const reset = await cli("reset");
  st.note(`reset: exit ${reset.code}: ${reset.stdout.trim().replace(/\n/g, " ; ")}`);
  st.check(reset.code === 0, "reset exits 0");
  const after = stateOf(ext);
  st.check(
    after.driver === "e1000" && after.netdev !== undefined && after.mac === ext.mac,
    `reset returned ext1 to e1000: ${fmtNic("ext1", after)}`,
  );
  const detachOrDelete = (ec2?.requests ?? []).filter((x) =>
    ["DetachNetworkInterface", "DeleteNetworkInterface"].includes(x.action),
  );
  st.check(
    ec2Calls() === c0 && detachOrDelete.length === 0,
    "reset sent no EC2 request (no Detach, no Delete)",
  );
  st.check(
    ec2?.enis.get(ext.interfaceId)?.attachment?.status === "attached",
    "EC2 still shows the external ENI attached",
  );
  return st;
}

// ---- main ------------------------------------------------------------------------------------------

const steps: Record<string, () => Promise<Step | void>> = {
  s5: s5Guards,
  s1: s1Bind,
  s2: s2Idempotent,
  carry,
  s3: s3Reboot,
  s4b: s4FailAfterUnbind,
  s8: s8CrashMidBind,
  s15: s15DeviceGone,
  s16: s16Driverless,
  s4: s4NoNoiommu,
  s6: s6Hotplug,
  s9: s9External,
  dpdkSetup,
  s14: s14NoHugepages,
  s10: s10TestpmdForwards,
  s13: s13ReconcileUnderApp,
  s11: s11DevbindAgrees,
  s12: s12BindingScript,
  s12b: s12bBindingScriptEnv,
};

async function main(): Promise<void> {
  const net = await setupNetwork();
  process.stdout.write(`E2E-NET ${net.join(" | ")}\n`);
  const { imdsUrl, ec2Url } = await startEmulators();
  setCliEnv({
    AWS_EC2_METADATA_SERVICE_ENDPOINT: imdsUrl,
    AWS_ENDPOINT_URL_EC2: ec2Url,
    ...CLI_AWS_ENV,
  });
  for (const id of plan.steps) {
    const fn = steps[id];
    if (!fn) continue;
    process.stdout.write(`E2E-STEP ${id} start\n`);
    const t0 = Date.now();
    try {
      const st = await fn();
      if (st) record({ ...st.result(), ms: Date.now() - t0 });
    } catch (e) {
      record({
        scenario: id,
        title: "crashed",
        status: "FAIL",
        evidence: [String((e as Error)?.stack ?? e)],
      });
    }
  }
  process.exit(0);
}

void main();
