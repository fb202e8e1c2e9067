// Our own code as one classic script, compiled with a V8 code cache that an earlier run made after
// it had run (`vm.Script#createCachedData`), so the cache holds every function that run compiled.
// ES modules cannot do this: Node's compile cache is made right after compiling, when V8 has
// compiled only the top level, and each module costs a resolve, a load and a link. On a converged
// node, `apply` went 114 -> 94 ms with it on Node 22 (docs/benchmarks.md).
//
// V8 rejects a cache made by another V8 or with other flags, but it checks the source by length
// only: the cache file is named after the script's size, mtime and inode, as Python names its .pyc
// by mtime and size, so an edited or replaced script never meets an old cache.
import { createRequire } from "node:module";

// Required, not imported: an ES import of node:fs builds the module's facade, which loads fs's
// streams; with path and vm that is 3-4 ms of every start (hyperfine, Node 22).
const require = createRequire(import.meta.url);
const fs = require("node:fs") as typeof import("node:fs");
const path = require("node:path") as typeof import("node:path");
const vm = require("node:vm") as typeof import("node:vm");
const { fileURLToPath } = require("node:url") as typeof import("node:url");

/** The path of `rel` beside the module at `base` (an import.meta.url), spaces and all. */
export const besides = (rel: string, base: string): string => fileURLToPath(new URL(rel, base));

const CACHE_SUFFIX = ".v8";

export interface CachedScript<T> {
  exports: T;
  /** whether V8 took the cache file; false when there was none */
  cacheUsed: boolean;
  /**
   * Write the cache of what has run so far, unless V8 took the one it was given. Atomic (temp
   * file, fsync, rename), and it removes this command's caches of other scripts. Never throws:
   * the cache is an optimisation, and a directory that cannot be written leaves the start as it was.
   */
  keep(): void;
}

/**
 * Run `file`, a CommonJS script, as `(require, module, exports, host) => …`, with the cache that
 * `cacheDir` holds for (`file`, `name`). `host` is what the script shares with the entry (the
 * modules that must exist once: the vendor fence, the signal queue, the start-up hook).
 */
export function runCached<T>(
  file: string,
  cacheDir: string,
  name: string,
  host: Record<string, unknown>,
): CachedScript<T> {
  const fd = fs.openSync(file, "r");
  let source: string;
  let key: string;
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    source = fs.readFileSync(fd, "utf8");
    key = `${path.basename(file)}.${name}.${st.size}.${st.mtimeNs}.${st.ino}${CACHE_SUFFIX}`;
  } finally {
    fs.closeSync(fd);
  }
  const cacheFile = path.join(cacheDir, key);
  const cachedData = readOwnCache(cacheFile);
  // One line, so the script's line numbers in stack traces are its own.
  const script = new vm.Script(
    `(function (require, module, exports, __host, __filename) {${source}\n})`,
    {
      filename: file,
      cachedData,
    },
  );
  const cacheUsed = cachedData !== undefined && !script.cachedDataRejected;
  const module = { exports: {} as T };
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run(createRequire(file), module, module.exports, host, file);
  return {
    exports: module.exports,
    cacheUsed,
    keep() {
      if (cacheUsed) return;
      try {
        writeCache(cacheDir, cacheFile, script.createCachedData(), `.${name}.`);
      } catch {
        // an unwritable or full directory: the next start compiles as this one did
      }
    },
  };
}

/** Where this start keeps its caches; set by the entry before the first vendor script loads. */
let cacheDir: string | undefined;
const vendorScripts: { name: string; script: CachedScript<unknown> }[] = [];

export function setCacheDir(dir: string): void {
  cacheDir = dir;
}

/**
 * A vendor library built as a script of its own (`rel`, beside the entry, by scripts/build.mjs),
 * run with a cache as the CLI script is: Node 20 has no compile cache for ES modules, and Node
 * 22's is made before the run, so the SDK's ES chunks compiled its calls again at every first boot.
 * One cache per library, whichever command made it: every command calls the SDK alike. The entry
 * decides which are kept (`keepVendorScripts`): all after a boot command, after any other only
 * those no boot loads (yargs).
 */
export function vendorScript(rel: string, name: string): unknown {
  if (cacheDir === undefined) throw new Error(`vendor script ${name} loaded before setCacheDir`);
  const script = runCached<unknown>(besides(rel, import.meta.url), cacheDir, `vendor-${name}`, {});
  vendorScripts.push({ name, script });
  return script.exports;
}

/** Keep the caches of the vendor scripts this start ran, or of those `only` names (see `CachedScript.keep`). */
export function keepVendorScripts(only?: readonly string[]): void {
  for (const { name, script } of vendorScripts.splice(0))
    if (!only || only.includes(name)) script.keep();
}

/**
 * The cache file, if it is ours alone: V8 runs its bytecode, so a file another user owns or may
 * write is code from them, and is never read.
 */
function readOwnCache(file: string): Buffer | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch {
    return undefined; // none yet: compiled as without a cache
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0) return undefined;
    return fs.readFileSync(fd);
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

function writeCache(dir: string, file: string, data: Buffer, command: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  // O_EXCL|O_NOFOLLOW, as Host.writeFileAtomic: a file or symlink planted at the temp name is
  // never written through.
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  // This command's caches of other scripts (an earlier release), and temp files a killed writer
  // left a minute or more ago; a writer still at work renames within milliseconds.
  const base = path.basename(file);
  for (const other of fs.readdirSync(dir)) {
    if (other === base) continue;
    const p = path.join(dir, other);
    const stale =
      (other.endsWith(CACHE_SUFFIX) && other.includes(command)) ||
      (other.endsWith(".tmp") && other.includes(CACHE_SUFFIX) && ageMs(p) > 60_000);
    if (stale) fs.rmSync(p, { force: true });
  }
}

function ageMs(p: string): number {
  try {
    return Date.now() - fs.statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}
