// `npm run demo`: a node boots with eni-dpdk. Emulated IMDSv2 and EC2 (with realistic latencies) and
// a simulated kernel stand in for the instance; the real CLI runs against them as a separate process.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { World, sampleConfig } from "../src/sim/world.js";

const repo = path.resolve(import.meta.dirname, "..");
const bundle = path.join(repo, "dist/eni-dpdk.cjs");
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function cli(world: World, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bundle, ...args], {
      env: world.env(),
      stdio: ["ignore", "inherit", "inherit"],
    });
    child.on("exit", (code) => resolve(code ?? 1));
  });
}

async function main() {
  const world = await World.start({
    latency: { CreateNetworkInterface: 300, AttachNetworkInterface: 200, "*": 40 },
    attachDelayMs: 1500,
    hotplugDelayMs: 1000,
    configToml: sampleConfig(),
    nodeadm: true,
  });
  try {
    console.log(
      bold(
        "# A node boots: primary NIC eth0 (ena) with the default route; no data-plane ENIs yet.",
      ),
    );
    console.log(
      `# IMDSv2 emulator ${world.imds.url}, EC2 emulator ${world.ec2.url}, fake root ${world.root}`,
    );
    console.log(bold("\n# /etc/eni-dpdk/config.toml"));
    console.log(sampleConfig().trimEnd());

    console.log(bold("\n$ eni-dpdk plan"));
    await cli(world, ["plan"]);

    console.log(
      bold(
        "\n$ eni-dpdk apply        # what eni-dpdk.service runs before kubelet (progress on stderr)",
      ),
    );
    const code = await cli(world, ["apply"]);
    if (code !== 0) throw new Error(`apply exited ${code}`);

    console.log(bold("\n$ eni-dpdk status"));
    await cli(world, ["status"]);

    console.log(
      bold("\n# /etc/pcidp/config.json, as the SR-IOV device plugin will read it when it starts"),
    );
    console.log(readFileSync(path.join(world.root, "etc/pcidp/config.json"), "utf8").trimEnd());
    console.log(bold("\n# /etc/eks/nodeadm.d/00-eni-dpdk-max-pods.yaml, read by nodeadm-run next"));
    console.log(
      readFileSync(
        path.join(world.root, "etc/eks/nodeadm.d/00-eni-dpdk-max-pods.yaml"),
        "utf8",
      ).trimEnd(),
    );

    console.log(
      bold("\n$ eni-dpdk sriov check  # what the device plugin will advertise, before it starts"),
    );
    if ((await cli(world, ["sriov", "check"])) !== 0) throw new Error("sriov check failed");

    const before = world.ec2.mutatingCalls();
    console.log(bold("\n$ eni-dpdk apply        # again: nothing to do"));
    await cli(world, ["apply"]);
    console.log(`# EC2 mutating calls by the second apply: ${world.ec2.mutatingCalls() - before}`);
    console.log(
      `# EC2 calls per action over the whole demo: ${JSON.stringify(world.ec2.callsPerAction())}`,
    );
  } finally {
    await world.close();
  }
}

main().catch((e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  process.exitCode = 1;
});
