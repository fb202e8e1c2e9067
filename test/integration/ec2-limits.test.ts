// [ec2.limits] in the built bundle against the EC2 and IMDS emulators: the account's raised request
// limits, set in the file, pace the service's EC2 calls (a storm that EC2's documented sizes would
// stretch past the deadline converges); bad limits from any source are exit 2 before any EC2 call.
import t from "tap";
import { baseToml, expectRejected, lastError, runCli, world } from "../support/harness.js";
import { EC2_ACTIONS } from "../../src/config/facts.js";
import { EC2_THROTTLE } from "../../src/sim/ec2.js";
import type { World } from "../../src/sim/world.js";

/** This account's buckets: refills far above EC2's documented 5/s (mutating) and 20/s (describes). */
const LIMITS_TOML = `
[ec2.limits]
mutating = { capacity = 100, refill_per_sec = 100 }
describe = { capacity = 10, refill_per_sec = 200 }
`;
/** The account raised the limits of every action eni-dpdk calls. */
const ACTIONS = EC2_ACTIONS;

/** The emulator throttles with this account's buckets, and the node boots into a storm. */
function raisedAccount(w: World): void {
  w.ec2.setThrottle({
    ...EC2_THROTTLE,
    override: Object.fromEntries(
      ACTIONS.map((a) => [
        a,
        a.startsWith("Describe")
          ? { capacity: 10, refillPerSec: 200 }
          : { capacity: 100, refillPerSec: 100 },
      ]),
    ),
  });
  // The node group's other nodes have just emptied the describe bucket: the first
  // DescribeNetworkInterfaces is throttled, which tells the pacer that many nodes boot at once.
  w.ec2.faults.errors.DescribeNetworkInterfaces = {
    status: 503,
    code: "RequestLimitExceeded",
    message: "Request limit exceeded.",
    count: 1,
  };
}

/** The base config with the shortest boot deadline (10 s), and `extra` appended. */
const config = (extra = "") =>
  baseToml(extra).replace("[service]\n", "[service]\ntimeout_seconds = 10\n");

t.test(
  "limits in the file pace the service's calls: a storm against raised limits converges; untold, the same storm outlasts the deadline",
  async (t) => {
    const [told, untold] = await Promise.all([
      world(t, { configToml: config(LIMITS_TOML) }),
      world(t, { configToml: config() }),
    ]);
    raisedAccount(told);
    raisedAccount(untold);
    const [a, b] = await Promise.all([runCli(told, ["apply"]), runCli(untold, ["apply"])]);

    t.equal(a.code, 0, `told: converged: ${lastError(a)}`);
    t.equal(told.ec2.mutatingCalls({ accepted: true }), 6, "3 effective mutating calls per ENI");
    t.equal(told.ec2.mutatingCalls(), 6, "none throttled, none sent twice");
    t.ok(
      told.ec2.throttledCalls() <= untold.ec2.throttledCalls(),
      `no more throttles than untold (${told.ec2.throttledCalls()} / ${untold.ec2.throttledCalls()})`,
    );
    // EC2's documented sizes: two bucket-fulls of 100 describes at 20/s ahead, then their nodes'
    // creates, attaches and modifies at 5/s: more waiting than the 10 s deadline, at any slot.
    t.equal(b.code, 1, "untold: the pass fails");
    t.match(
      lastError(b),
      /RequestLimitExceeded.*next try is due in \d+ s, after this run's deadline/,
    );
    t.equal(
      untold.ec2.mutatingCalls(),
      untold.ec2.mutatingCalls({ accepted: true }),
      "untold: no mutating call throttled either: it waited instead",
    );

    const shown = await runCli(told, ["config"]);
    t.equal(shown.code, 0, shown.stderr);
    t.match(shown.stdout, /^\[ec2\.limits\]$/m);
    t.match(
      shown.stdout,
      /^mutating\.refill_per_sec = 100 +# \/etc\/eni-dpdk\/config\.toml:\d+:\d+$/m,
      "eni-dpdk config shows each limit with its source",
    );
    t.match(
      shown.stdout,
      /^\[gc\]\nenabled = true +# default$/m,
      "and [gc], which it once left out",
    );
  },
);

t.test(
  "bad [ec2.limits] from the file, user-data or a tag: exit 2 naming source, key and what was expected, before any EC2 call",
  async (t) => {
    const w = await world(t, {
      configToml: config("\n[ec2.limits]\nAttachNetworkInterfaces = { capacity = 200 }\n"),
    });
    w.imds.instance.userData = "[ec2.limits]\nmutating = { refill_per_sec = 0 }\n";
    w.imds.instance.tags = { "eni-dpdk:ec2": "limits.describe.capacity=lots" };
    const r = await expectRejected(t, w, ["apply"], {
      source: /\/etc\/eni-dpdk\/config\.toml:\d+:\d+/,
      key: "ec2.limits.AttachNetworkInterfaces",
      message:
        /unknown EC2 action "AttachNetworkInterfaces" \(did you mean "AttachNetworkInterface"\?\)/,
    });
    const errors = r.log.filter((l) => l.level === "error");
    const named = (source: RegExp, key: string, message: RegExp) =>
      t.ok(
        errors.some((l) => source.test(l.source) && l.key === key && message.test(l.msg)),
        `${key} named from ${source}; got: ${lastError(r)}`,
      );
    named(
      /^user-data:\d+:\d+$/,
      "ec2.limits.mutating.refill_per_sec",
      /expected a number of requests per second above 0, up to 100000 .*, got 0/,
    );
    named(
      /^tag eni-dpdk:ec2$/,
      "ec2.limits.describe.capacity",
      /expected a whole number of requests 1\.\.100000 .*, got "lots"/,
    );
    t.equal(w.ec2.totalCalls(), 0, "not even a describe");
  },
);
