// Preloaded (node --import) into an apply by boot.ts: the timer waits of that process, printed to
// stderr at exit as one line `SETTLE_WAITS {"n":…,"ms":…,"anyMs":…}`: how many, their sum, and the
// time during which at least one was pending (waits of devices bound at once overlap). A real
// kernel has acted on a sysfs write when the write returns; the simulated one answers a moment
// later, so each check of an effect that misses sleeps its back-off (core/deadline.ts SETTLE).
const realSetTimeout = globalThis.setTimeout;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const waits = [];
globalThis.setTimeout = function (fn, ms, ...args) {
  if (!(ms > 0 && ms < 1000)) return realSetTimeout(fn, ms, ...args);
  const wait = { from: nowMs(), to: 0 };
  waits.push(wait);
  return realSetTimeout(
    function (...a) {
      wait.to = nowMs();
      return fn.apply(this, a);
    },
    ms,
    ...args,
  );
};
process.on("exit", () => {
  const done = waits.filter((w) => w.to > 0).sort((a, b) => a.from - b.from);
  let anyMs = 0;
  let end = -Infinity;
  for (const w of done) {
    anyMs += Math.max(0, w.to - Math.max(w.from, end));
    end = Math.max(end, w.to);
  }
  const ms = done.reduce((sum, w) => sum + (w.to - w.from), 0);
  process.stderr.write(`SETTLE_WAITS ${JSON.stringify({ n: done.length, ms, anyMs })}\n`);
});
