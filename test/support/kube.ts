// A cluster for the NodeENI source: the Kubernetes API emulator, a kubeconfig for it under the
// world's root, and NodeENI objects. The integration tests' NodeENI worlds share these.
import type { Test } from "tap";
import { KubeApiEmulator, testPki } from "../../src/sim/kube-api.js";
import { SG_DPDK, SUBNET_A } from "../../src/sim/node.js";
import type { World } from "../../src/sim/world.js";
import { put } from "./harness.js";

/** The emulator's certificates (its CA signs the server certificate). */
export const pki = testPki();

/** The config of a node whose only ENI source is the cluster's NodeENIs, read with KUBECONFIG_PATH. */
export const KUBECONFIG_PATH = "/etc/eni-dpdk/kubeconfig";
export const KUBE_TOML =
  `[service]\nsources = ["file", "nodeeni"]\nreconcile_interval_seconds = 0\n` +
  `[kubernetes]\nkubeconfig = "${KUBECONFIG_PATH}"\n`;

/** A NodeENI selecting every node: one ENI in SUBNET_A at device index 3, unless `spec` says else. */
export const nodeEni = (name: string, spec: Record<string, unknown> = {}) => ({
  metadata: { name },
  spec: {
    nodeSelector: {},
    subnetID: SUBNET_A,
    securityGroupIDs: [SG_DPDK],
    deviceIndex: 3,
    ...spec,
  },
});

const b64 = (s: string) => Buffer.from(s).toString("base64");

/** A kubeconfig for `server`, trusting the emulator's CA, with `user` as its credentials. */
export function kubeconfig(server: string, user = "{token: t0k}", extra = ""): string {
  return `apiVersion: v1
kind: Config
current-context: ctx
clusters:
- name: c1
  cluster:
    server: ${server}
    certificate-authority-data: ${b64(pki.caCert)}
contexts:
- name: ctx
  context: {cluster: c1, user: u1}
users:
- name: u1
  user: ${user}
${extra}`;
}

/** The emulator serving `objects`, its token t0k a node's, and the world's kubeconfig naming it. */
export async function withKube(t: Test, w: World, objects: object[]): Promise<KubeApiEmulator> {
  const emu = await new KubeApiEmulator(objects as never[]).start();
  emu.tokens.set("t0k", "system:node:test");
  t.teardown(() => emu.close());
  put(w, KUBECONFIG_PATH.slice(1), kubeconfig(emu.url), 0o600);
  return emu;
}
