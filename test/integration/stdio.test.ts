// The bundle's standard output and error (core/stdio.ts): a reader that went away never stops a
// boot, and the sd-daemon priorities go only to journald's own stream.
import t from "tap";
import { spawn } from "node:child_process";
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { World } from "../../src/sim/world.js";
import { BUNDLE, NODE, REPO, baseToml, converge, world } from "../support/harness.js";

/** `apply` with the given stderr: "closed" is a pipe whose reader is gone before the first line. */
function applyWith(
  w: World,
  stderr: "closed" | number,
  env: NodeJS.ProcessEnv = {},
): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE[0], [...NODE.slice(1), BUNDLE, "apply", "--log-level", "debug"], {
      env: { ...w.env(), ...env },
      cwd: REPO,
      stdio: ["ignore", "ignore", stderr === "closed" ? "pipe" : stderr],
    });
    if (stderr === "closed") child.stderr!.destroy();
    child.on("error", reject);
    child.on("exit", (code) => resolve(code));
  });
}

t.test("an apply whose stderr nobody reads (EPIPE) still binds, and exits 0", async (t) => {
  // `eni-dpdk apply 2>&1 | head -1`, or a journal stream that broke: until 2026-12-08 the first
  // line written after the reader left was an uncaught EPIPE, and the apply died before its binds
  // (exit 1, the devices left on ena).
  const w = await world(t, { configToml: baseToml() });
  await converge(t, w);
  w.reboot();
  t.equal(w.sim.driverOf("0000:00:06.0"), "ena", "the reboot gave the device back to ena");
  t.equal(await applyWith(w, "closed"), 0, "exit 0");
  t.equal(w.sim.driverOf("0000:00:06.0"), "vfio-pci", "and bound");
  const status = JSON.parse(readFileSync(path.join(w.root, "run/eni-dpdk/status.json"), "utf8"));
  t.equal(status.apply.ok, true, "its status says so");
  t.match(status.apply.summary, /^ready: .*1 bound/, "with the bind in its summary");
});

t.test("`status | head -1`: a reader that stops early is no error (EPIPE on stdout)", async (t) => {
  // until 2026-12-08: exit 1 and Node's stack trace of the EPIPE on stderr
  const w = await world(t, { configToml: baseToml() });
  await converge(t, w);
  for (const args of [["status"], ["status", "--json"], ["plan"]]) {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(NODE[0], [...NODE.slice(1), BUNDLE, ...args], {
        env: w.env(),
        cwd: REPO,
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.destroy();
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stderr }));
    });
    t.equal(r.code, 0, `${args.join(" ")}: exit 0`);
    t.notMatch(r.stderr, /EPIPE|Node\.js v\d/, `${args.join(" ")}: no stack trace`);
  }
});

t.test("the sd-daemon priority prefixes only the stream JOURNAL_STREAM names", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-journal-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = async (name: string, journalOf?: (fd: number) => string) => {
    const file = path.join(dir, name);
    const fd = openSync(file, "w");
    const code = await applyWith(
      w,
      fd,
      journalOf ? { JOURNAL_STREAM: journalOf(fd) } : { JOURNAL_STREAM: "" },
    );
    closeSync(fd);
    t.equal(code, 0, `${name}: exit 0`);
    return readFileSync(file, "utf8").trim().split("\n");
  };
  const journal = await run("journal", (fd) => {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  });
  t.ok(journal.length > 3, "lines were written");
  t.same(
    journal.filter((l) => !/^<[3467]>level=(debug|info|warn|error) /.test(l)),
    [],
    "journald's stream: every line carries its priority",
  );
  t.ok(
    journal.some((l) => l.startsWith("<6>level=info ")) &&
      journal.some((l) => l.startsWith("<7>level=debug ")) &&
      journal.some((l) => l.startsWith('<4>level=warn msg="no hugepages')),
    "info is <6>, debug <7>, the hugepage warning <4> (`journalctl -p warning` shows it)",
  );
  // a command a unit started with its stderr redirected to a file inherits JOURNAL_STREAM
  const redirected = await run("redirected", (fd) => {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino + 1}`;
  });
  t.same(
    redirected.filter((l) => !/^level=/.test(l)),
    [],
    "another stream than the one named: plain lines",
  );
  const plain = await run("plain");
  t.same(
    plain.filter((l) => !/^level=/.test(l)),
    [],
    "no JOURNAL_STREAM: plain lines",
  );
});
