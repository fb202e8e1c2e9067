// core/stdio.ts on real descriptors: a FIFO (a pipe with a name, so the test can open its ends
// non-blocking), a file, a closed descriptor.
import t, { type Test } from "tap";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { FdWriter } from "../../../src/core/stdio.js";

/** A FIFO's two ends, both non-blocking, closed after the test. */
function fifo(t: Test): { reader: number; writer: number } {
  const dir = fs.mkdtempSync(path.join(tmpdir(), "eni-dpdk-stdio-"));
  const p = path.join(dir, "fifo");
  execFileSync("mkfifo", [p]);
  const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
  const reader = fs.openSync(p, O_RDONLY | O_NONBLOCK);
  const writer = fs.openSync(p, O_WRONLY | O_NONBLOCK);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { reader, writer };
}

const lines = (n: number) =>
  Array.from({ length: n }, (_, i) => `level=info msg="line ${i}" ${"x".repeat(60)}\n`);

t.test("lines to a file land whole and in order, each at once", async (t) => {
  const dir = fs.mkdtempSync(path.join(tmpdir(), "eni-dpdk-stdio-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "out");
  const fd = fs.openSync(file, "w");
  let fellBack = false;
  const w = new FdWriter(fd, () => {
    fellBack = true;
    return process.stderr;
  });
  const text = lines(3000); // 250 KB: more than one write(2) of a pipe's size
  for (const l of text) {
    w.write(l);
    // written before write() returns: nothing waits in a buffer of ours
    if (l === text[10]) t.equal(fs.readFileSync(file, "utf8"), text.slice(0, 11).join(""));
  }
  fs.closeSync(fd);
  t.equal(fs.readFileSync(file, "utf8"), text.join(""), "every line, in order");
  t.notOk(fellBack, "no stream was built");
});

t.test(
  "a non-blocking pipe that fills hands the rest to a stream: nothing lost, order kept",
  async (t) => {
    const { reader, writer } = fifo(t);
    const streams: net.Socket[] = [];
    const w = new FdWriter(writer, () => {
      // what Node builds for a pipe on fd 1 or 2
      streams.push(new net.Socket({ fd: writer, readable: false, writable: true }));
      return streams[0];
    });
    const text = lines(3000);
    // the pipe holds 64 KB and nobody reads yet: the first write(2) fills it, then EAGAIN
    for (const l of text) w.write(l);
    t.equal(streams.length, 1, "one stream took over");
    const got: Buffer[] = [];
    const input = new net.Socket({ fd: reader, readable: true, writable: false });
    input.on("data", (d: Buffer) => got.push(d));
    await new Promise<void>((resolve) => w.flush(resolve));
    const ended = new Promise<void>((resolve) => input.on("end", resolve));
    streams[0].end();
    await ended;
    t.equal(Buffer.concat(got).toString(), text.join(""), "every line, in order");
  },
);

t.test("a pipe nobody reads (EPIPE) drops the lines without throwing", async (t) => {
  const { reader, writer } = fifo(t);
  fs.closeSync(reader);
  const w = new FdWriter(writer, () => {
    throw new Error("no stream for a closed pipe");
  });
  t.doesNotThrow(() => w.write("level=info msg=lost\n"));
  t.ok(w.closed, "marked closed");
  t.doesNotThrow(() => w.write("level=info msg=also-lost\n"), "later lines are dropped too");
  fs.closeSync(writer);
});

t.test("any other error is the caller's (a descriptor that is not open)", async (t) => {
  const fd = fs.openSync("/dev/null", "w");
  fs.closeSync(fd);
  const w = new FdWriter(fd, () => process.stderr);
  t.throws(() => w.write("x\n"), { code: "EBADF" });
});

t.test("isJournal: only the stream JOURNAL_STREAM names (device:inode)", async (t) => {
  const dir = fs.mkdtempSync(path.join(tmpdir(), "eni-dpdk-stdio-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const fd = fs.openSync(path.join(dir, "journal"), "w");
  t.teardown(() => fs.closeSync(fd));
  const st = fs.fstatSync(fd);
  const w = new FdWriter(fd, () => process.stderr);
  t.ok(w.isJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }), "the named stream");
  t.notOk(w.isJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }), "another stream");
  t.notOk(w.isJournal({}), "no JOURNAL_STREAM");
  const closed = new FdWriter(999_999, () => process.stderr);
  t.notOk(closed.isJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }), "a descriptor not open");
});
