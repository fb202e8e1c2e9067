// The one fence around third-party code: every vendor library (the AWS SDK, yaml, toml, yargs,
// sd-notify) is loaded here, on first use, so a boot that needs none of them pays for none of them.
// In the code-split ESM bundle a dynamic import of a CommonJS package yields only `default`; under
// tsx it yields the named exports too: `interop` takes either.
import { createRequire } from "node:module";

export function interop<T extends object>(mod: T, probe: keyof T): T {
  const m = mod as T & { default?: T };
  return m[probe] !== undefined ? m : (m.default ?? m);
}

/** require() for what loads on first use: built-ins, and the sd-notify addon the bundle keeps external. */
const lazyRequire = createRequire(import.meta.url);

/** The EC2 client and the commands eni-dpdk sends (core/vendor-ec2.ts), only when a call is made. */
export async function loadEc2Sdk(): Promise<typeof import("./vendor-ec2.js")> {
  return interop(await import("./vendor-ec2.js"), "EC2Client");
}

/** The SDK's credential chain and SigV4 signer, for the EKS token. */
export async function loadEksSigning() {
  const { defaultProvider } = interop(
    await import("@aws-sdk/credential-provider-node"),
    "defaultProvider",
  );
  const { SignatureV4 } = interop(await import("@smithy/signature-v4"), "SignatureV4");
  const { Sha256 } = interop(await import("@smithy/core/checksum"), "Sha256");
  return { defaultProvider, SignatureV4, Sha256 };
}

/** yaml, for NodeConfig and kubeconfig documents. */
export async function loadYaml(): Promise<typeof import("yaml")> {
  return interop(await import("yaml"), "parseAllDocuments");
}

/** toml's parser (70 KB of code), needed only when a document is not in the parse memo. */
export async function loadTomlParser(): Promise<typeof import("toml")> {
  return interop(await import("toml"), "parse");
}

/** yargs, for every command line but the units' own (which the CLI parses itself). */
export async function loadYargs(): Promise<Yargs> {
  // In the bundle a vendor script's exports arrive as `default`, and yargs' own default among them.
  const m = (await import("yargs")) as { default: Yargs | { default: Yargs } };
  return typeof m.default === "function" ? m.default : m.default.default;
}
type Yargs = typeof import("yargs").default;

/** The optional sd-notify addon (it needs libsystemd to build); undefined when it is not there. */
export function loadSdNotify<T>(): { addon?: T; error?: string } {
  try {
    return { addon: lazyRequire("sd-notify") as T };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/**
 * Node built-ins that only rare paths need (crypto for client tokens, zlib for gzip user-data),
 * loaded on first use: each costs milliseconds of start-up that a converged boot never needs.
 */
export const lazyCrypto = (): typeof import("node:crypto") => lazyRequire("node:crypto");
export const lazyZlib = (): typeof import("node:zlib") => lazyRequire("node:zlib");
/** node:https (with tls): ~16 ms of a Node 22 start, paid only by the NodeENI source's API reads. */
export const lazyHttps = (): typeof import("node:https") => lazyRequire("node:https");
/** node:net, for IMDS's own HTTP/1.1 (cloud/imds-http.ts); already loaded wherever stdio is a pipe. */
export const lazyNet = (): typeof import("node:net") => lazyRequire("node:net");
/** Only a child killed by a signal needs its number (about 0.4 ms of every start, imported). */
export const lazyOs = (): typeof import("node:os") => lazyRequire("node:os");
