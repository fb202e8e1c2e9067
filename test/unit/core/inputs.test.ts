// The recorder of a pass's reads (src/core/inputs.ts): what it keeps, and what spoils a pass.
import t from "tap";
import { asRecorded, inputs } from "../../../src/core/inputs.js";

t.test(
  "a listing is compared without the outputs and their live writers' temp files",
  async (t) => {
    const outputs = new Set(["/run/x/status.json"]);
    const alive = (pid: number) => pid === 10;
    const list = (names: string[]) => asRecorded("list", "/run/x", names, outputs, alive);
    t.equal(list(["a", "status.json"]), JSON.stringify(["a"]), "the output itself");
    t.equal(list(["a", ".status.json.10.1796.tmp"]), JSON.stringify(["a"]), "a live writer's temp");
    t.equal(
      list(["a", ".status.json.11.1796.tmp"]),
      JSON.stringify(["a", ".status.json.11.1796.tmp"]),
      "a dead writer's temp stays: the planner would remove it",
    );
    t.equal(
      list([".state.json.10.1796.tmp"]),
      JSON.stringify([".state.json.10.1796.tmp"]),
      "a temp of an input stays, live writer or not",
    );
    t.equal(asRecorded("read", "/run/x/status.json", "text", outputs), JSON.stringify("text"));
    t.equal(asRecorded("read", "/a", undefined, outputs), "null", "absent is null");
  },
);

t.test("a recording keeps each read once, and not the outputs", async (t) => {
  inputs.note("read", "/before", "x");
  inputs.spoil("before the start");
  t.equal(inputs.spoiled, undefined, "nothing is recorded or spoiled before start");
  inputs.start(["/out"]);
  inputs.note("read", "/a", "1");
  inputs.note("read", "/a", "1");
  inputs.note("read", "/out", "anything");
  t.equal(inputs.spoiled, undefined, "the same value twice is one read");
  t.ok(inputs.isOutput("/out"));
  t.same(inputs.stop(), [["read", "/a", JSON.stringify("1")]], "outputs are not inputs");
});

t.test("a value that moved spoils the pass, which then records nothing more", async (t) => {
  inputs.start([]);
  inputs.note("read", "/a", "1");
  inputs.note("read", "/a", "2");
  t.match(inputs.spoiled, /read \/a changed during the pass/);
  inputs.spoil("a later reason");
  t.match(inputs.spoiled, /changed during the pass/, "the first reason is kept");
  inputs.note("read", "/b", "3");
  t.equal(
    inputs.observe("read", "/c", () => "4"),
    "4",
    "reads still return their value",
  );
  t.same(inputs.stop(), [], "a spoiled pass, never a record, keeps no reads");
  t.match(inputs.spoiled, /changed during the pass/, "and still says why");
});
