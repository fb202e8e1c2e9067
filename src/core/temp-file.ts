// The temp file of an atomic write: `.<name>.<pid>.<ms>.tmp` beside its target, so that whoever
// finds one can tell which file and which process it belongs to.
import path from "node:path";

export function tempFileFor(target: string, pid = process.pid, now = Date.now()): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${pid}.${now}.tmp`);
}

/** The target's name and the writer's pid of a temp file's name; undefined for any other name. */
export function parseTempFile(name: string): { of: string; pid: number } | undefined {
  const m = /^\.(.+)\.(\d+)\.\d+\.tmp$/.exec(name);
  return m ? { of: m[1], pid: Number(m[2]) } : undefined;
}
