// The session's EC2 pacer: sized by the config's [ec2.limits] (the file's at start, the merged
// sources' once a pass has read them), EC2's documented sizes elsewhere; one pacer for every pass.
import t from "tap";
import { Session } from "../../../src/reconcile/session.js";
import { buildConfig } from "../../../src/config/model.js";
import { Deadline } from "../../../src/core/deadline.js";
import { silentLogger } from "../../../src/core/log.js";
import type { Imds } from "../../../src/cloud/imds.js";

/** No IMDS is asked here: the pacer is only sized and told of a throttle. */
const imds: Imds = {
  get: async () => undefined,
  getBytes: async () => undefined,
};
const ec2Of = (limits: Record<string, unknown>) =>
  buildConfig([{ source: "test", data: { ec2: { limits } } }]).config.ec2;

t.test("the pacer paces by the file's limits, then by the merged sources'", async (t) => {
  const file = ec2Of({ AttachNetworkInterface: { capacity: 200, refill_per_sec: 20 } });
  const session = new Session(silentLogger, new Deadline(10_000), imds, { ec2: file });
  const pacer = session.pacer;
  t.same(pacer.bucket("AttachNetworkInterface"), { capacity: 200, refillPerSec: 20 });
  t.same(pacer.bucket("CreateNetworkInterface"), { capacity: 100, refillPerSec: 5 }, "documented");
  pacer.throttled("CreateNetworkInterface");
  const learned = pacer.backlog("CreateNetworkInterface");
  t.ok(learned > 45, `a lone throttle: half a documented bucket-full (${learned.toFixed(1)})`);

  // The pass's sources are merged (user-data or a tag named more): the same pacer is resized.
  session.useConfig(ec2Of({ mutating: { capacity: 1000, refill_per_sec: 100 } }));
  t.equal(session.pacer, pacer, "one pacer: what it learned stays");
  t.same(pacer.bucket("CreateNetworkInterface"), { capacity: 1000, refillPerSec: 100 });
  t.same(pacer.bucket("AttachNetworkInterface"), { capacity: 1000, refillPerSec: 100 });
  t.same(pacer.bucket("DescribeSubnets"), { capacity: 100, refillPerSec: 20 }, "documented");
  t.ok(
    pacer.backlog("CreateNetworkInterface") > learned - 5,
    "the learned backlog is kept through the resize",
  );

  // run's next pass (and its gc pass) shares the pacer and the limits.
  const next = session.next(new Deadline(10_000));
  t.equal(next.pacer, pacer);
  next.useConfig(ec2Of({}));
  t.same(
    pacer.bucket("CreateNetworkInterface"),
    { capacity: 100, refillPerSec: 5 },
    "a reload that drops the limits: documented again",
  );
});

t.test("a session whose file names no limits paces by EC2's documented sizes", async (t) => {
  const session = new Session(silentLogger, new Deadline(10_000), imds);
  t.same(session.pacer.bucket("AttachNetworkInterface"), { capacity: 50, refillPerSec: 5 });
  t.same(session.pacer.bucket("DescribeInstances:unfiltered"), { capacity: 50, refillPerSec: 10 });
});
