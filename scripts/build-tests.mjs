// Compile the test files (and the src and support modules they import) to plain ESM in one esbuild
// call, so tap runs them without tsx: tsx costs every test process ~0.5 s of CPU (its hooks on a
// loader thread, then a transform of each module). Output mirrors test/ under .cache/test/, shared
// code split into chunks; linked source maps point stack traces back to the .ts lines.
import { build } from "esbuild";
import { readFile, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";

const repo = path.resolve(import.meta.dirname, "..");
export const TEST_OUT = path.join(repo, ".cache/test");

/** Every test file, repo-relative: what tap's `include` (test/**\/*.test.ts) selects. */
export async function testFiles() {
  const all = await readdir(path.join(repo, "test"), { recursive: true });
  return all
    .filter((f) => f.endsWith(".test.ts"))
    .map((f) => path.join("test", f))
    .sort();
}

/**
 * Compile `order` (repo-relative test files); returns each one's compiled path, repo-relative:
 * test/x/y.test.ts → .cache/test/NN/x/y.test.mjs. tap starts files in the order of their names,
 * so NN, the file's place in `order`, decides which start first.
 */

// A bundled module's import.meta is its output file's; the tests and src find files beside their
// source (test/support/repo.ts: the repo root; notify.ts: notify-recv.py), so each module gets
// its source's own values.
const sourceMeta = {
  name: "source-import-meta",
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
      const text = await readFile(args.path, "utf8");
      const values = {
        dirname: path.dirname(args.path),
        filename: args.path,
        url: pathToFileURL(args.path).href,
      };
      return {
        contents: text.replace(/\bimport\.meta\.(dirname|filename|url)\b/g, (_, k) =>
          JSON.stringify(values[k]),
        ),
        loader: "ts",
      };
    });
  },
};

export async function buildTests(order) {
  const out = order.map((f, i) =>
    path.join(String(i).padStart(2, "0"), path.relative("test", f).replace(/\.ts$/, "")),
  );
  await rm(TEST_OUT, { recursive: true, force: true });
  await build({
    absWorkingDir: repo,
    entryPoints: order.map((f, i) => ({ in: f, out: out[i] })),
    outdir: TEST_OUT,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    // node_modules load as they do under tsx (tap above all: one instance per process)
    packages: "external",
    sourcemap: "linked",
    sourcesContent: false,
    chunkNames: "chunks/[name]-[hash]",
    plugins: [sourceMeta],
    logLevel: "warning",
  });
  return new Map(
    order.map((f, i) => [f, path.relative(repo, path.join(TEST_OUT, `${out[i]}.mjs`))]),
  );
}

if (process.argv[1] === import.meta.filename) await buildTests(await testFiles());
