// Bundle the CLI with esbuild: ESM (yargs is ESM-only), code splitting so each lazily imported
// module (the EC2 SDK above all) is a chunk parsed only when its command path needs it.
import { build } from "esbuild";
import { mkdir, mkdtemp, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";

// Build beside dist/ and rename each file into place, then drop what the build no longer makes:
// a process running the old bundle (a test, while another test rebuilds) never sees a file vanish.
const out = "dist";
const staging = await mkdtemp(".dist-");
let result;
try {
  result = await build({
    entryPoints: { "eni-dpdk": "src/main.ts" },
    outdir: staging,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    // The SDK publishes ES builds beside CommonJS; only the ES ones tree-shake (2.9 MB → 2.5 MB).
    mainFields: ["module", "main"],
    target: "node20",
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: "linked",
    // sd-notify is a native addon, optional at run time; the notify seam loads it with require.
    external: ["sd-notify"],
    // Bundled CommonJS (the AWS SDK, toml) still calls require() for Node built-ins.
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    chunkNames: "chunks/[name]-[hash]",
    metafile: true,
    logLevel: "warning",
  });
  const files = (dir) =>
    readdir(dir, { recursive: true, withFileTypes: true }).then((l) =>
      l.filter((f) => f.isFile()).map((f) => path.relative(dir, path.join(f.parentPath, f.name))),
    );
  const made = await files(staging);
  for (const rel of made) {
    await mkdir(path.dirname(path.join(out, rel)), { recursive: true });
    await rename(path.join(staging, rel), path.join(out, rel));
  }
  for (const rel of await files(out)) if (!made.includes(rel)) await rm(path.join(out, rel));
} finally {
  await rm(staging, { recursive: true, force: true });
}
const outputs = Object.entries(result.metafile.outputs).filter(([f]) => f.endsWith(".mjs"));
const total = outputs.reduce((n, [, o]) => n + o.bytes, 0);
console.log(
  `built dist/eni-dpdk.mjs + ${outputs.length - 1} chunks, ${(total / 1024).toFixed(0)} KiB`,
);
