// Compile the test files (and the src and support modules they import) to plain ESM in one esbuild
// call, so tap runs them without tsx: tsx costs every test process ~0.5 s of CPU (its hooks on a
// loader thread, then a transform of each module). Output mirrors test/ under .cache/test/, shared
// code split into chunks; linked source maps point stack traces back to the .ts lines.
import { build } from "esbuild";
import { isBuiltin } from "node:module";
import { readFile, readdir, rm, writeFile } from "node:fs/promises";
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

/**
 * tap and what it imports are bundled, into one chunk the files share (one instance per process):
 * loading tap from node_modules, file by file, cost each test process 0.29 s of CPU, bundled 0.15 s.
 * Every other package loads from node_modules, as the product's code meets it under Node.
 */
const tapBundled = {
  name: "tap-bundled",
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (a) => {
      if (isBuiltin(a.path)) return { external: true };
      const fromPackage = a.importer.includes(`${path.sep}node_modules${path.sep}`);
      if (fromPackage || a.path === "tap" || a.path.startsWith("@tapjs/")) return undefined;
      return { external: true };
    });
  },
};

export async function buildTests(order) {
  const out = order.map((f, i) =>
    path.join(String(i).padStart(2, "0"), path.relative("test", f).replace(/\.ts$/, "")),
  );
  await rm(TEST_OUT, { recursive: true, force: true });
  const { metafile } = await build({
    absWorkingDir: repo,
    entryPoints: order.map((f, i) => ({ in: f, out: out[i] })),
    outdir: TEST_OUT,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    plugins: [sourceMeta, tapBundled],
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    sourcemap: "linked",
    sourcesContent: false,
    chunkNames: "chunks/[name]-[hash]",
    metafile: true,
    logLevel: "warning",
  });
  // The chunk of tap's code keeps no source map: with --enable-source-maps Node parses a chunk's
  // map when it loads it, and tap's (390 KB) was 0.18 s of CPU in every test process.
  for (const [file, o] of Object.entries(metafile.outputs)) {
    const inputs = Object.keys(o.inputs);
    if (!file.endsWith(".mjs") || !inputs.every((i) => i.includes("node_modules/"))) continue;
    const text = await readFile(path.join(repo, file), "utf8");
    await writeFile(path.join(repo, file), text.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n"));
    await rm(path.join(repo, `${file}.map`), { force: true });
  }
  return new Map(
    order.map((f, i) => [f, path.relative(repo, path.join(TEST_OUT, `${out[i]}.mjs`))]),
  );
}

if (process.argv[1] === import.meta.filename) await buildTests(await testFiles());
