import t from "tap";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
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
