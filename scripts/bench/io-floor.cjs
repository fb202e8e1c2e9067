// The I/O of a converged `apply` with none of eni-dpdk's code: the same IMDS requests (replayed from
// a real apply's request log, over a keep-alive pool as the CLI's), flock(1) for the host lock, a read of
// every attribute under the PCI devices and netdevs, the config/state/SR-IOV files, and the status
// file written. boot.ts times it beside `node -e 0` as the floor the boot-time goal sits on.
// CommonJS, as the CLI's entry is: an ES module would add Node's module loader (2.3 ms) to the
// floor, and an ES import of node:fs its facade, which is no I/O of the boot's.
// Usage: node io-floor.cjs <file with one IMDS path per line>   (env as the CLI gets it)
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");

(async () => {
  const endpoint = new URL(process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT);
  const root = process.env.ENI_DPDK_ROOT;
  const paths = fs
    .readFileSync(process.argv[2], "utf8")
    .split("\n")
    .filter((p) => p && p !== "api/token");

  // HTTP/1.1 spoken on sockets directly, as the CLI does (src/cloud/imds-http.ts), with the least
  // a floor needs: answers framed by Content-Length, as the emulator frames them; 4 keep-alive sockets.
  const idle = [];
  const connect = () =>
    new Promise((resolve) => {
      const s = net.connect(Number(endpoint.port), endpoint.hostname, () => resolve(s));
      s.setNoDelay(true);
    });
  const request = async (method, p, headers) => {
    const sock = idle.pop() ?? (await connect());
    return new Promise((resolve) => {
      let buf = Buffer.alloc(0);
      const onData = (d) => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const len = Number(
          /\r\ncontent-length: *(\d+)/i.exec(buf.subarray(0, end).toString())?.[1],
        );
        if (buf.length < end + 4 + len) return;
        sock.off("data", onData);
        idle.push(sock);
        resolve(buf.subarray(end + 4, end + 4 + len).toString());
      };
      sock.on("data", onData);
      const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
      sock.write(
        `${method} /latest/${p} HTTP/1.1\r\nHost: ${endpoint.host}\r\n${lines.join("")}\r\n`,
      );
    });
  };
  const pool = (n, jobs) => {
    const queue = [...jobs];
    return Promise.all(
      Array.from({ length: n }, async () => {
        while (queue.length) await queue.shift()();
      }),
    );
  };

  const locked = new Promise((resolve) => {
    const child = spawn("flock", ["--exclusive", path.join(root, "run/eni-dpdk.lock"), "cat"]);
    child.stdout.once("data", () => resolve(child));
    child.stdin.write("locked\n");
  });
  const token = await request("PUT", "api/token", {
    "x-aws-ec2-metadata-token-ttl-seconds": "21600",
  });
  await pool(
    4,
    paths.map((p) => () => request("GET", p, { "x-aws-ec2-metadata-token": token })),
  );
  for (const s of idle) s.destroy();

  let files = 0;
  // The entries of devices/ and class/net are links to each device's own directory: go in (until
  // 2026-12-04 the walk only read those links, and so read no attribute at all). Links inside a
  // device's directory (driver, iommu_group, subsystem) are read, not followed.
  const walk = (dir, depth, intoLinks = false) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isSymbolicLink() && intoLinks && fs.statSync(p).isDirectory()) walk(p, depth - 1);
      else if (e.isSymbolicLink()) fs.readlinkSync(p);
      else if (e.isFile()) {
        try {
          fs.readFileSync(p, "utf8");
          files++;
        } catch {
          // write-only attributes (bind, unbind, new_id) refuse reads, as on a real kernel
        }
      } else if (e.isDirectory() && depth > 0) walk(p, depth - 1);
    }
  };
  // a device's attributes, its net/ and its netdev's (net/eth1/address)
  walk(path.join(root, "sys/bus/pci/devices"), 3, true);
  walk(path.join(root, "sys/class/net"), 1, true);
  for (const f of [
    "etc/eni-dpdk/config.toml",
    "var/lib/eni-dpdk/state.json",
    "etc/pcidp/config.json",
  ])
    fs.readFileSync(path.join(root, f));

  const lock = await locked;
  const dir = path.join(root, "run/eni-dpdk");
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, ".floor.tmp"),
    JSON.stringify({ files, requests: paths.length + 1 }),
  );
  fs.renameSync(path.join(dir, ".floor.tmp"), path.join(dir, "floor.json"));
  lock.stdin.end();
  process.exit(0);
})();
