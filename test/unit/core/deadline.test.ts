// The one wait and back-off home: Deadline (bounded, abortable sleeps) and BacklogPacer (pacing
// against a shared token bucket learned from throttles alone), on a clock the test moves.
import t, { type Test } from "tap";
import { BacklogPacer, Deadline, isoTime, pollUntil } from "../../../src/core/deadline.js";

const bucket = { capacity: 100, refillPerSec: 5 };

t.test("a pacer says nothing while the backlog fits in one burst", async (t) => {
  let now = 0;
  const p = new BacklogPacer(bucket, 0.5, undefined, () => now);
  t.equal(p.delayMs(), 0, "nothing learned: go");
  t.equal(p.atLeast(99), true);
  t.equal(p.delayMs(), 0, "99 calls ahead still fit in the burst of 100");
  now += 1000;
  t.equal(p.backlog(), 94, "the bucket refilled 5 in 1 s: 5 fewer ahead");
});

t.test("a throttle adds two bucket-fulls; the wait is slot x backlog / refill", async (t) => {
  let now = 0;
  const early = new BacklogPacer(bucket, 0, undefined, () => now);
  const late = new BacklogPacer(bucket, 0.99, undefined, () => now);
  early.throttled();
  late.throttled();
  t.equal(early.backlog(), 200);
  t.equal(early.slot, 0.05, "slot 0 still waits a little: no caller hammers");
  t.equal(early.delayMs(), (0.05 * 200 * 1000) / 5);
  const lone = new BacklogPacer(bucket, 0.5, undefined, () => now);
  lone.throttled(0.5);
  t.equal(lone.backlog(), 50, "half a bucket-full: under one burst");
  t.equal(lone.delayMs(), ((1 + lone.slot) * 1000) / 5, "still a token's wait after a throttle");
  t.ok(late.delayMs() > 19 * early.delayMs(), "slots spread the callers over the backlog");
  t.equal(late.delayMs(), (late.slot * 200 * 1000) / 5);
  now += 10_000;
  t.equal(early.backlog(), 150, "drains at the refill rate");
  early.throttled();
  t.equal(early.backlog(), 350, "a second throttle adds on what is left");
  early.throttled(0.5);
  t.equal(early.backlog(), 400, "or as many bucket-fulls as the caller says");
  now += 1_000_000;
  t.equal(early.backlog(), 0, "never below zero");
  t.equal(early.delayMs(), 0);
});

t.test("atLeast raises, never lowers; snapshot and restore carry the estimate", async (t) => {
  let now = 5000;
  const p = new BacklogPacer(bucket, 0.3, undefined, () => now);
  t.equal(p.atLeast(500), true);
  t.equal(p.atLeast(400), false, "lower: ignored");
  t.equal(p.backlog(), 500);
  const saved = p.snapshot();
  now += 20_000;
  const restored = new BacklogPacer(bucket, 0.3, saved, () => now);
  t.equal(restored.backlog(), 400, "a restarted caller goes on from the saved estimate, drained");
  t.equal(restored.delayMs(), p.delayMs(), "and waits as the original would");
  const future = new BacklogPacer(bucket, 0.3, { backlog: 100, at: now + 3_600_000 }, () => now);
  t.equal(future.backlog(), 100, "a saved time in the future counts as now: no growth");
  now += 1000;
  t.equal(future.backlog(), 95);
  const huge = new BacklogPacer(bucket, 0.3, { backlog: 1e15, at: now }, () => now);
  t.equal(
    huge.backlog(),
    86_400 * 5,
    "at most a day of refill: a planted number cannot stall for ever",
  );
});

t.test(
  "Deadline.sleep: bounded by the deadline, ended at once by abort (own or parent)",
  async (t) => {
    const d = new Deadline(150);
    let t0 = Date.now();
    await d.sleep(10_000);
    const took = Date.now() - t0;
    t.ok(took >= 140 && took < 1000, `slept until the deadline (${took} ms)`);

    const parent = new Deadline(60_000);
    const child = parent.within(30_000);
    t0 = Date.now();
    setTimeout(() => parent.abort(), 50);
    await child.sleep(20_000);
    t.ok(Date.now() - t0 < 1000, "a parent's abort wakes the child's sleep");
    t.equal(child.remaining(), 0);
    await child.sleep(5000);
    t.ok(Date.now() - t0 < 1000, "an aborted deadline does not sleep at all");
  },
);

t.test(
  "resize: what was learned is kept, drained at the old refill until now and the new one after",
  async (t) => {
    let now = 0;
    const p = new BacklogPacer(bucket, 0.5, undefined, () => now);
    p.throttled();
    now += 10_000;
    t.equal(p.backlog(), 150, "200 learned, 50 drained at 5/s");
    const raised = { capacity: 400, refillPerSec: 100 };
    p.resize(raised);
    t.same(p.bucket, raised);
    t.equal(p.backlog(), 150, "the estimate survives the resize");
    t.equal(p.delayMs(), 0, "150 fit in a burst of 400, and the throttle's token came long ago");
    now += 1000;
    t.equal(p.backlog(), 50, "and drains at the new refill: 100 in 1 s");
    p.throttled();
    t.equal(p.backlog(), 850, "a throttle now adds two of the new bucket-fulls");
    t.equal(p.delayMs(), (p.slot * 850 * 1000) / 100, "the wait is by the new refill");
  },
);

t.test(
  "a turn is a time: asked again later, after a restart or in another bucket's wake, it holds",
  async (t) => {
    let now = 0;
    const p = new BacklogPacer(bucket, 0.5, undefined, () => now);
    p.throttled();
    const wait = (p.slot * 200 * 1000) / 5;
    t.equal(p.delayMs(), wait, "21 s: its share of two bucket-fulls");
    now += 15_000; // e.g. its run's deadline came, then RestartSec
    t.equal(p.delayMs(), wait - 15_000, "15 s later the same turn: 6 s left");
    t.ok(
      p.delayMs() < (p.slot * p.backlog() * 1000) / 5,
      "queueing anew behind what is left (13 s) would count again the callers served meanwhile",
    );
    const restarted = new BacklogPacer(bucket, 0.5, p.snapshot(), () => now);
    t.equal(restarted.delayMs(), wait - 15_000, "a restarted process keeps the turn");
    t.equal(restarted.backlog(), 125, "and the estimate, drained");
    const old = new BacklogPacer(bucket, 0.5, { backlog: 125, at: now }, () => now);
    t.equal(old.delayMs(), (p.slot * 125 * 1000) / 5, "a state saved without a turn queues anew");

    now += 10_000; // past the turn: the caller went, and was throttled again
    restarted.throttled();
    t.equal(restarted.backlog(), 75 + 200);
    t.equal(
      restarted.delayMs(),
      (p.slot * 275 * 1000) / 5,
      "it came too early: a throttle queues it anew behind all it knows of",
    );
    t.equal(restarted.atLeast(100), false, "atLeast below the estimate: nothing changes");
    now += 5000;
    const before = restarted.delayMs();
    t.equal(restarted.atLeast(350), true);
    t.equal(
      restarted.delayMs(),
      before + (p.slot * 100 * 1000) / 5,
      "atLeast moves the turn by the caller's share of what it added (100 more), not anew",
    );

    const planted = new BacklogPacer(bucket, 0.5, { backlog: 0, at: now, turn: 1e15 }, () => now);
    planted.atLeast(200);
    t.ok(planted.delayMs() <= 86_400_000 * 2, "a planted turn is at most about a day away");
    const junk = new BacklogPacer(bucket, 0.5, { backlog: 200, at: now, turn: NaN }, () => now);
    t.equal(junk.delayMs(), (p.slot * 200 * 1000) / 5, "a damaged one counts as absent");
  },
);

t.test("isoTime writes what toISOString writes, without asking for the time zone", async (t) => {
  const cases = [
    0,
    -1, // 1969-12-31T23:59:59.999Z
    Date.UTC(2024, 1, 29, 23, 59, 59, 7), // a leap day, one-digit milliseconds
    Date.UTC(2026, 11, 4, 9, 5, 3, 40),
    Date.UTC(1900, 0, 1),
    new Date("0000-01-01T00:00:00.000Z").getTime(),
    new Date("9999-12-31T23:59:59.999Z").getTime(),
    new Date("+010000-01-01T00:00:00.000Z").getTime(), // expanded years: toISOString's own text
    new Date("-000001-01-01T00:00:00.000Z").getTime(),
  ];
  for (const ms of cases) t.equal(isoTime(ms), new Date(ms).toISOString(), `at ${ms}`);
  for (let i = 0; i < 50; i++) {
    const ms = Math.floor((Math.random() - 0.2) * 8e12);
    t.equal(isoTime(ms), new Date(ms).toISOString(), `at ${ms}`);
  }
  const now = Date.now();
  t.ok(Math.abs(Date.parse(isoTime()) - now) < 1000, "no argument: now");
  t.throws(() => isoTime(NaN), RangeError, "an invalid time throws as toISOString does");
});

/**
 * A wall clock (Date.now) the test steps, as chrony's makestep or `date -s` step the real one.
 * Installed before the object under test is made, so a clock taken from Date.now would see the step.
 */
function wallClock(t: Test): { step(ms: number): void } {
  const real = Date.now;
  let offset = 0;
  Date.now = () => real() + offset;
  t.teardown(() => {
    Date.now = real;
  });
  return { step: (ms) => (offset += ms) };
}
const HOUR = 3_600_000;

t.test("a step of the wall clock neither ends a deadline nor stretches it", async (t) => {
  const wall = wallClock(t);
  const d = new Deadline(5_000);
  wall.step(HOUR);
  t.ok(d.remaining() > 4_000, `an hour forward: ${d.remaining()} ms left of 5 s`);
  wall.step(-30 * 24 * HOUR);
  t.ok(d.remaining() <= 5_000, `a month back: ${d.remaining()} ms left, never more than 5 s`);
  const inner = d.within(1_000);
  wall.step(HOUR);
  t.ok(inner.remaining() > 500, "a deadline within it too");
});

t.test("a poll whose clock steps back an hour still ends at its bound", async (t) => {
  const wall = wallClock(t);
  const t0 = performance.now();
  let tries = 0;
  const v = await pollUntil(
    () => {
      if (++tries === 1) wall.step(-HOUR);
      return undefined;
    },
    { within: 150, backoff: { firstMs: 10, maxMs: 20 } },
  );
  const took = performance.now() - t0;
  t.equal(v, undefined, "never found");
  t.ok(took >= 140 && took < 2_000, `gave up after ${took.toFixed(0)} ms (bound 150)`);
});

t.test("a poll whose clock steps forward an hour goes on until its probe succeeds", async (t) => {
  const wall = wallClock(t);
  const deadline = new Deadline(5_000);
  let tries = 0;
  const v = await pollUntil(
    () => {
      if (++tries === 1) wall.step(HOUR);
      return tries === 4 ? "there" : undefined;
    },
    { deadline, backoff: { firstMs: 5, maxMs: 10 } },
  );
  t.equal(v, "there");
  t.equal(tries, 4, "polled on past the step");
});

t.test("a pacer's wait after a throttle does not grow when the clock steps back", async (t) => {
  const wall = wallClock(t);
  const p = new BacklogPacer(bucket, 0.5);
  p.throttled();
  const before = p.delayMs();
  wall.step(-HOUR);
  const after = p.delayMs();
  t.ok(after <= before, `${after.toFixed(0)} ms after the step, ${before.toFixed(0)} ms before`);
});
