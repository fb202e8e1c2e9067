// What one apply read from the world, so that a later apply can tell, by reading it all again,
// that nothing it depends on has changed (commands/unchanged.ts). The seams record here: the host
// layer's reads, the trusted-file reads, IMDS answers. Anything a pass depends on that cannot be
// read again as data (an EC2 or API call, a program run, a process probed, a write) spoils the
// record: such a pass is never taken as proof.
import { parseTempFile } from "./temp-file.js";

/** One read and what it returned, as JSON: [operation, path or key, value]. */
export type Observation = [op: string, key: string, value: string];

export interface LoggedLine {
  level: "warn" | "error";
  msg: string;
  fields: Record<string, unknown>;
}

class Inputs {
  private recording = false;
  private readonly seen = new Map<string, Observation>();
  private readonly skipped = new Set<string>();
  readonly logged: LoggedLine[] = [];
  /** Why this pass cannot stand for a later one, once something said so. */
  spoiled: string | undefined;

  /** Start recording; `outputs` are paths the pass writes for others (its status), not inputs. */
  start(outputs: Iterable<string>): void {
    this.recording = true;
    this.seen.clear();
    this.logged.length = 0;
    this.spoiled = undefined;
    this.skipped.clear();
    for (const p of outputs) this.skipped.add(p);
  }

  stop(): Observation[] {
    this.recording = false;
    return [...this.seen.values()];
  }

  note(op: string, key: string, value: unknown): void {
    if (!this.recording || this.skipped.has(key)) return;
    const id = `${op}\0${key}`;
    const json = asRecorded(op, key, value, this.skipped);
    const prev = this.seen.get(id);
    // a value that moved during the pass: the pass saw a change happen, and proves nothing
    if (prev && prev[2] !== json) this.spoil(`${op} ${key} changed during the pass`);
    else if (!prev) this.seen.set(id, [op, key, json]);
  }

  /**
   * Make a read and record it (`recorded` is the value as data, the value itself by default). A
   * read that fails spoils the pass: its error is not a value a later apply could compare.
   */
  observe<T>(op: string, key: string, read: () => T, recorded: (v: T) => unknown = (v) => v): T {
    let v: T;
    try {
      v = read();
    } catch (e) {
      this.spoil(`${op} ${key}: ${(e as Error).message}`);
      throw e;
    }
    if (this.recording) this.note(op, key, recorded(v));
    return v;
  }

  /** `key` is an output: writing it does not spoil the pass. */
  isOutput(key: string): boolean {
    return this.skipped.has(key);
  }

  /** The pass can no longer stand for a later one: recording stops (a boot's binds spoil early). */
  spoil(why: string): void {
    if (!this.recording) return;
    this.spoiled ??= why;
    this.recording = false;
    this.seen.clear();
    this.logged.length = 0;
  }

  log(line: LoggedLine): void {
    if (this.recording) this.logged.push(line);
  }
}

/**
 * A read's value as recorded and as compared: JSON, and a directory's listing without the outputs
 * and the temp files (core/temp-file.ts, Host.writeFileAtomic's) that live writers of them
 * hold: the status another apply is writing would otherwise make every listing of its directory
 * differ. A dead writer's temp stays in (`alive`, when replaying): the planner removes it, so the
 * apply must plan. (A pass that saw one removed it and spoiled its record, so the recorder needs no
 * such test.)
 */
export function asRecorded(
  op: string,
  key: string,
  value: unknown,
  outputs: ReadonlySet<string>,
  alive: (pid: number) => boolean = () => true,
): string {
  if (op === "list" && Array.isArray(value))
    value = value.filter((name: string) => {
      const temp = parseTempFile(name);
      return !outputs.has(`${key}/${temp?.of ?? name}`) || (temp !== undefined && !alive(temp.pid));
    });
  return JSON.stringify(value ?? null);
}

/** The process's one recorder; off unless an apply turned it on. */
export const inputs = new Inputs();
