import t from "tap";
import { existsSync, mkdtempSync, writeFileSync, mkdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Host } from "../../../src/host/host.js";

t.test("every host path resolves under the root, and none leaves it", async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), "host-root-"));
  mkdirSync(path.join(root, "etc"));
  writeFileSync(path.join(root, "etc/x"), "inside\n");
  for (const given of [root, `${root}/`, `${root}//`]) {
    const host = new Host(given);
    t.equal(host.path("/etc/x"), path.join(root, "etc/x"), `root given as ${given}`);
    t.equal(await host.read("/etc/x"), "inside\n");
  }
  const host = new Host(root);
  t.equal(host.path("/etc/./x"), path.join(root, "etc/x"), "`.` is normalized");
  t.equal(host.path("/etc//x"), path.join(root, "etc/x"), "`//` is normalized");
  t.equal(host.path("/etc/../etc/x"), path.join(root, "etc/x"), "`..` inside the root is allowed");
  t.throws(() => host.path("/../etc/passwd"), /leaves the root/, "`..` past the root is refused");
  t.throws(() => host.path("/sys/../../x"), /leaves the root/);
  t.throws(() => host.path("etc/x"), /must be absolute/);
  t.equal(new Host("/").path("/etc/x"), "/etc/x", "the real root adds nothing");
});

t.test("a refused sysfs write names the attribute, the value and the reason", async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), "host-root-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  // an attribute that cannot be opened for writing (here a directory: EISDIR), as a kernel's refusal
  mkdirSync(path.join(root, "sys/class/net/eth1/mtu"), { recursive: true });
  const host = new Host(root);
  const e = await host.writeAttr("/sys/class/net/eth1/mtu", "9216").then(
    () => undefined,
    (err: unknown) => err as NodeJS.ErrnoException,
  );
  t.match(
    e?.message,
    /^the kernel refused "9216" in \/sys\/class\/net\/eth1\/mtu: illegal operation on a directory \(EISDIR\)$/,
  );
  t.equal(e?.code, "EISDIR", "the errno stays readable");
  t.equal(host.changes.length, 1, "the attempt is listed among the run's changes");
});

t.test("the lock's holder: named while it holds the lock, in a record of fixed size", async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), "host-root-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const host = new Host(root);
  const lockFile = path.join(root, "run/eni-dpdk.lock");
  t.equal(host.lockHolder(), undefined, "no lock file: no holder");
  t.equal(await host.lockHeld(), false, "and not held");
  t.notOk(existsSync(lockFile), "asking did not create the lock file");

  const lock = await host.acquireLock();
  const held = host.lockHolder();
  t.match(held, { pid: process.pid, since: /^\d{4}-\d\d-\d\dT/ });
  t.equal(statSync(lockFile).size, 512, "one record, always 512 bytes");
  t.equal(await host.lockHeld(), true);
  await lock.release();
  t.equal(host.lockHolder(), undefined, "released: the record says free");
  const next = JSON.stringify({ pid: process.pid, command: "the next holder", since: "now" });
  writeFileSync(lockFile, next);
  await lock.release();
  t.equal(host.lockHolder()?.command, "the next holder", "a second release writes nothing");
  // flock drops the lock as it exits, a moment after release
  for (let i = 0; i < 50 && (await host.lockHeld()); i++)
    await new Promise((r) => setTimeout(r, 20));
  t.equal(await host.lockHeld(), false);

  const record = (r: unknown) => writeFileSync(lockFile, JSON.stringify(r));
  record({ pid: 2 ** 22 + 12345, command: "run", since: "2026-12-08T00:00:00.000Z" });
  t.equal(host.lockHolder(), undefined, "a pid that is gone is not named");
  record({ pid: "1; rm -rf /", command: "run", since: "x" });
  t.equal(host.lockHolder(), undefined, "a record of another shape is ignored");
  writeFileSync(lockFile, "\0".repeat(512));
  t.equal(host.lockHolder(), undefined, "nor is garbage");
});
