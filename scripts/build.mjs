// Bundle the CLI with esbuild, in four parts:
// - chunks/cli-<hash>.js: our own code as one CommonJS script, which the entry runs with a V8 code
//   cache made after a run (src/core/code-cache.ts). The modules that must exist once for the
//   entry and the script (HOST_MODULES) are not in it: it gets the entry's through `__host`.
// - chunks/vendor-<name>-<hash>.js: the vendor libraries of a boot's path and yargs
//   (VENDOR_SCRIPTS), each one CommonJS script that src/core/lazy.ts runs on first use, with a code
//   cache of its own.
// - chunks/vendor-<name>-<hash>.mjs and the chunks they share: the EKS token's signing libraries,
//   which lazy.ts imports on first use as ES modules, parsed only when a command needs them.
// - eni-dpdk.cjs: the entry and the host modules, CommonJS. A boot then never starts Node's ES
//   module loader, which cost every apply 2-4 ms (docs/benchmarks.md).
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rename, rm } from "node:fs/promises";
import { isBuiltin } from "node:module";
import path from "node:path";

/** The entry's modules the script uses through `__host.<name>` (src/main.ts passes them). */
const HOST_MODULES = {
  "src/core/lazy.ts": "lazy",
  "src/core/signals.ts": "signals",
  "src/core/startup.ts": "startup",
  "src/core/stdio.ts": "stdio",
};

/**
 * The vendor libraries of a boot's path that src/core/lazy.ts imports, and yargs, which every other
 * command loads, each built as one CommonJS script that the entry runs with a V8 code cache made
 * after a run (core/code-cache.ts `vendorScript`), as our own script. The SDK's is self-contained:
 * the EKS signing chunks below have their own copy of the smithy code they share with it, and
 * nothing passes between the two.
 */
const VENDOR_SCRIPTS = {
  ec2: "src/core/vendor-ec2.ts",
  toml: "toml",
  yaml: "yaml",
  yargs: "yargs",
};

/** The rest of lazy.ts's dynamic imports, each an ES chunk of its own. */
const VENDOR = {
  "credential-provider": "@aws-sdk/credential-provider-node",
  "signature-v4": "@smithy/signature-v4",
  checksum: "@smithy/core/checksum",
};

/**
 * A vendor script's `import("node:http")` as a require: a classic script run by vm has no dynamic
 * import, and on Node 22 the ES facade of node:http would load undici besides (14 ms).
 */
const builtinsRequired = {
  name: "builtins-required",
  setup(b) {
    b.onResolve({ filter: /.*/ }, (a) =>
      a.kind === "dynamic-import" && isBuiltin(a.path)
        ? { path: a.path, namespace: "builtin" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "builtin" }, (a) => ({
      contents: `module.exports = require(${JSON.stringify(a.path)});`,
      loader: "js",
    }));
  },
};

/** yargs' string-width, loaded on its first call with text outside printable ASCII. */
const STRING_WIDTH_ASCII = path.join(import.meta.dirname, "vendor/string-width-ascii.cjs");
const lazyStringWidth = {
  name: "lazy-string-width",
  setup(b) {
    b.onResolve({ filter: /^string-width$/ }, async (a) => {
      if (a.pluginData === "real") return undefined;
      const real = await b.resolve(a.path, {
        kind: a.kind,
        resolveDir: a.resolveDir,
        pluginData: "real",
      });
      return { path: real.path, namespace: "lazy-string-width" };
    });
    b.onLoad({ filter: /.*/, namespace: "lazy-string-width" }, (a) => ({
      // a require() in a function is bundled as a module that runs on its first call
      contents:
        `module.exports = require(${JSON.stringify(STRING_WIDTH_ASCII)})(` +
        `() => require(${JSON.stringify(a.path)}).default);\n`,
      loader: "js",
      resolveDir: path.dirname(a.path),
    }));
  },
};

const hostModules = {
  name: "host-modules",
  setup(b) {
    const byPath = new Map(Object.entries(HOST_MODULES).map(([f, n]) => [path.resolve(f), n]));
    b.onResolve({ filter: /^\./ }, (a) => {
      const name = byPath.get(path.resolve(a.resolveDir, a.path.replace(/\.js$/, ".ts")));
      return name ? { path: name, namespace: "host" } : undefined;
    });
    b.onLoad({ filter: /.*/, namespace: "host" }, (a) => ({
      contents: `module.exports = __host.${a.path};`,
      loader: "js",
    }));
  },
};

/**
 * What a record of a converged apply is keyed by (src/commands/unchanged.ts): a digest of every
 * source file, the lockfile and this script, so a record never outlives the code that made it.
 */
async function buildId() {
  const hash = createHash("sha256");
  const files = (await readdir("src", { recursive: true }))
    .filter((f) => f.endsWith(".ts"))
    .map((f) => path.join("src", f))
    .sort();
  for (const f of [...files, "package-lock.json", "scripts/build.mjs"])
    hash
      .update(f)
      .update("\0")
      .update(await readFile(f))
      .update("\0");
  return hash.digest("hex").slice(0, 16);
}

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "linked",
  metafile: true,
  logLevel: "warning",
  // An import.meta left in the script would be empty there: fail the build instead.
  logOverride: { "empty-import-meta": "error" },
};

async function sameBytes(a, b) {
  try {
    return (await readFile(a)).equals(await readFile(b));
  } catch {
    return false; // not there yet
  }
}

const out = "dist";
const staging = await mkdtemp(".dist-");
let result;
let scriptFile;
let unchangedFile;
try {
  const script = await build({
    ...common,
    entryPoints: { cli: "src/cli.ts", unchanged: "src/commands/unchanged.ts" },
    outdir: path.join(staging, "chunks"),
    entryNames: "[name]-[hash]",
    format: "cjs",
    plugins: [hostModules],
    define: { ENI_DPDK_BUILD_ID: JSON.stringify(await buildId()) },
  });
  const scriptOf = (entry) =>
    Object.entries(script.metafile.outputs).find(([, o]) => o.entryPoint === entry)[0];
  scriptFile = scriptOf("src/cli.ts");
  unchangedFile = scriptOf("src/commands/unchanged.ts");
  /** What the two vendor builds share: one entry per library, `vendor-<name>-<hash>`. */
  const vendorBuild = (libraries, options) =>
    build({
      ...common,
      entryPoints: Object.fromEntries(
        Object.entries(libraries).map(([n, from]) => [`vendor-${n}`, from]),
      ),
      outdir: path.join(staging, "chunks"),
      entryNames: "[name]-[hash]",
      // The SDK publishes ES builds beside CommonJS; only the ES ones tree-shake (2.9 → 2.5 MB).
      mainFields: ["module", "main"],
      ...options,
    });
  /** each library's specifier (as lazy.ts imports it) → its output, relative to the entry */
  const outputsOf = (libraries, result, ext) =>
    new Map(
      Object.entries(libraries).map(([n, from]) => {
        const file = Object.entries(result.metafile.outputs).find(
          ([f, o]) => o.entryPoint && new RegExp(`/vendor-${n}-[A-Z0-9]+\\${ext}$`).test(f),
        )?.[0];
        if (!file) throw new Error(`no output for vendor ${n} (${from})`);
        return [from, { name: n, rel: `./${path.relative(staging, file)}` }];
      }),
    );
  const vendorScripts = await vendorBuild(VENDOR_SCRIPTS, {
    format: "cjs",
    plugins: [builtinsRequired, lazyStringWidth],
    // yargs is ESM-only: it asks import.meta.url where it is (for its locales' directory), and
    // import.meta.resolve for a config's `extends`, which require.resolve answers in a script
    banner: { js: 'var __scriptUrl = require("node:url").pathToFileURL(__filename).href;' },
    define: { "import.meta.url": "__scriptUrl", "import.meta.resolve": "require.resolve" },
  });
  for (const [file, o] of Object.entries(vendorScripts.metafile.outputs))
    if (o.imports.some((i) => i.kind === "dynamic-import"))
      throw new Error(`${file}: a dynamic import is left, and vm runs the script without one`);
  const vendorScript = outputsOf(VENDOR_SCRIPTS, vendorScripts, ".js");
  const vendor = await vendorBuild(VENDOR, {
    chunkNames: "[name]-[hash]",
    outExtension: { ".js": ".mjs" },
    splitting: true,
    format: "esm",
    // Bundled CommonJS (the AWS SDK's credential chain) still calls require() for built-ins.
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
  });
  const vendorChunk = outputsOf(VENDOR, vendor, ".mjs");
  const vendorChunks = {
    name: "vendor-chunks",
    setup(b) {
      b.onResolve({ filter: /.*/ }, (a) => {
        if (a.kind !== "dynamic-import") return undefined;
        const from = a.path === "./vendor-ec2.js" ? "src/core/vendor-ec2.ts" : a.path;
        if (vendorScript.has(from)) return { path: from, namespace: "vendor-script" };
        const chunk = vendorChunk.get(from);
        if (!chunk) throw new Error(`${a.importer}: import(${a.path}) is not a vendor chunk`);
        return { path: chunk.rel, external: true };
      });
      // The import yields the script's exports as `default` (lazy.ts's interop takes either).
      b.onLoad({ filter: /.*/, namespace: "vendor-script" }, (a) => {
        const { name, rel } = vendorScript.get(a.path);
        return {
          contents:
            `import { vendorScript } from "./code-cache.ts";\n` +
            `export default vendorScript(${JSON.stringify(rel)}, ${JSON.stringify(name)});\n`,
          loader: "js",
          resolveDir: path.resolve("src/core"),
        };
      });
    },
  };
  result = await build({
    ...common,
    entryPoints: { "eni-dpdk": "src/main.ts" },
    outdir: staging,
    outExtension: { ".js": ".cjs" },
    format: "cjs",
    // sd-notify is a native addon, optional at run time; the notify seam loads it with require.
    external: ["sd-notify"],
    plugins: [vendorChunks],
    // strict, as the ES module was: the banner goes before esbuild's own directive
    banner: {
      js: '"use strict";const __entryUrl = require("node:url").pathToFileURL(__filename).href;',
    },
    define: {
      "import.meta.url": "__entryUrl",
      ENI_DPDK_CLI_SCRIPT: JSON.stringify(path.relative(staging, scriptFile)),
      ENI_DPDK_UNCHANGED_SCRIPT: JSON.stringify(path.relative(staging, unchangedFile)),
    },
  });
  result.metafile.outputs = {
    ...result.metafile.outputs,
    ...vendor.metafile.outputs,
    ...vendorScripts.metafile.outputs,
    ...script.metafile.outputs,
  };
  const files = (dir) =>
    readdir(dir, { recursive: true, withFileTypes: true }).then((l) =>
      l.filter((f) => f.isFile()).map((f) => path.relative(dir, path.join(f.parentPath, f.name))),
    );
  const made = await files(staging);
  for (const rel of made) {
    // A file the build made the same again stays as it is: a process running from dist/ (a test
    // beside `npm run package`) keeps its file, and V8's code cache, keyed by the script's inode
    // and mtime (src/core/code-cache.ts), stays valid.
    if (await sameBytes(path.join(staging, rel), path.join(out, rel))) continue;
    await mkdir(path.dirname(path.join(out, rel)), { recursive: true });
    await rename(path.join(staging, rel), path.join(out, rel));
  }
  // The runs' caches in .v8-cache stay: those of the files kept above are still valid, and a
  // run removes its own stale ones when it writes (src/core/code-cache.ts).
  for (const rel of await files(out))
    if (!made.includes(rel) && !rel.startsWith(`.v8-cache${path.sep}`))
      await rm(path.join(out, rel));
} finally {
  await rm(staging, { recursive: true, force: true });
}
const outputs = Object.entries(result.metafile.outputs).filter(([f]) => /\.[cm]?js$/.test(f));
const total = outputs.reduce((n, [, o]) => n + o.bytes, 0);
console.log(
  `built dist/eni-dpdk.cjs + ${outputs.length - 1} chunks (our code in ${path.basename(scriptFile)}), ${(total / 1024).toFixed(0)} KiB`,
);
