// The simulated kernel's write-only attributes: each write takes effect, as on a real kernel, even
// several a moment apart (two devices bound at once write the same unbind and drivers_probe).
import { execFile } from "node:child_process";
import fs from "node:fs";
import { promisify } from "node:util";
import t from "tap";
import { DATA1, DATA2, node } from "../../support/fixture.js";

const waitFor = async (ok: () => boolean, ms = 3000) => {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (ok()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return ok();
};

t.test("two writes back to back to one write-only attribute both take effect", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const unbind = sim.p("/sys/bus/pci/drivers/ena/unbind");
  // no event-loop turn between them: a watched plain file would be read once, holding the second
  fs.writeFileSync(unbind, DATA1.bdf);
  fs.writeFileSync(unbind, DATA2.bdf);
  t.ok(
    await waitFor(() => !sim.driverOf(DATA1.bdf) && !sim.driverOf(DATA2.bdf)),
    "both devices left ena",
  );
  const probe = sim.p("/sys/bus/pci/drivers_probe");
  fs.writeFileSync(probe, DATA1.bdf);
  fs.writeFileSync(probe, DATA2.bdf + "\n");
  t.ok(
    await waitFor(() => sim.driverOf(DATA1.bdf) === "ena" && sim.driverOf(DATA2.bdf) === "ena"),
    "and both were probed back",
  );
  t.same(
    sim.writes.filter((w) => w.path.endsWith("/unbind") || w.path.endsWith("drivers_probe")),
    [
      { path: "/sys/bus/pci/drivers/ena/unbind", value: DATA1.bdf },
      { path: "/sys/bus/pci/drivers/ena/unbind", value: DATA2.bdf },
      { path: "/sys/bus/pci/drivers_probe", value: DATA1.bdf },
      { path: "/sys/bus/pci/drivers_probe", value: DATA2.bdf },
    ],
    "every write seen, in order",
  );
  t.same(sim.errors, []);
});

t.test("a writer in another process is never held up, and its write is seen", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const unbind = sim.p("/sys/bus/pci/drivers/ena/unbind");
  t.ok(fs.lstatSync(unbind).isFIFO(), "write-only attributes are FIFOs");
  await promisify(execFile)(process.execPath, [
    "-e",
    `const fs = require("fs"); fs.writeFileSync(${JSON.stringify(unbind)}, ${JSON.stringify(DATA1.bdf)});`,
  ]);
  t.ok(await waitFor(() => !sim.driverOf(DATA1.bdf)), "the device left ena");
  t.equal(sim.driverOf(DATA2.bdf), "ena", "the other stays");
  t.same(sim.errors, []);
});
