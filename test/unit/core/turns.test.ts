import t from "tap";
import { Turns } from "../../../src/core/turns.js";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test("one key: one at a time, in the order asked; other keys overlap", async (t) => {
  const turns = new Turns();
  const log: string[] = [];
  const job = (name: string, ms: number) => async () => {
    log.push(`${name} start`);
    await tick(ms);
    log.push(`${name} end`);
    return name;
  };
  const results = await Promise.all([
    turns.run("state.json", job("a", 30)),
    turns.run("state.json", job("b", 1)),
    turns.run("journal", job("c", 1)),
  ]);
  t.same(results, ["a", "b", "c"]);
  t.same(log, ["a start", "c start", "c end", "a end", "b start", "b end"]);
});

t.test("a failed turn passes the key on, and its caller gets the error", async (t) => {
  const turns = new Turns();
  const first = turns.run("k", async () => {
    await tick(5);
    throw new Error("disk full");
  });
  const second = turns.run("k", async () => "ran");
  await t.rejects(first, /disk full/);
  t.equal(await second, "ran");
});

t.test(
  "allSettledOrThrow: the values in order, or the first error once every one is done",
  async (t) => {
    const { allSettledOrThrow } = await import("../../../src/core/turns.js");
    t.same(await allSettledOrThrow([tick(5).then(() => 1), Promise.resolve(2)]), [1, 2]);
    let slowDone = false;
    const slow = tick(30).then(() => {
      slowDone = true;
    });
    await t.rejects(
      allSettledOrThrow([
        Promise.reject(new Error("first")),
        slow,
        Promise.reject(new Error("second")),
      ]),
      /first/,
    );
    t.ok(slowDone, "the slow one had finished before the error came");
  },
);
