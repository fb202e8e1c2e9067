// The Packer template: `packer fmt -check` on the directory as shipped, and `packer validate` with
// Debian's packer 1.6.6 (what CI installs). 1.6.6 predates two things the template needs for
// modern Packer, so validation runs on a temporary copy without them:
//   - plugins.pkr.hcl: `packer { required_plugins }` is rejected by 1.6.6 (builders were built in);
//   - the amazon-ebs `metadata_options` block (IMDSv2 on the build instance) is unknown to 1.6.6's
//     built-in builder; its presence and values are asserted on the text instead.
// Everything else (variables and their validation, the AMI filter, provisioners, the tarball path)
// is validated for real, and the broken variants below show the check can fail.
import t, { type Test } from "tap";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO } from "../support/repo.js";

const repo = REPO;
const dir = path.join(repo, "packer");
const template = fs.readFileSync(path.join(dir, "eni-dpdk.pkr.hcl"), "utf8");
const variables = fs.readFileSync(path.join(dir, "variables.pkr.hcl"), "utf8");

const version = spawnSync("packer", ["version"], { encoding: "utf8" });
const havePacker = !version.error && version.status === 0;
const tarballName = "eni-dpdk-0.1.0-linux-x64.tar.gz";

function packer(args: string[], cwd: string) {
  const r = spawnSync("packer", args, {
    cwd,
    encoding: "utf8",
    env: { ...process.env, CHECKPOINT_DISABLE: "1", PACKER_LOG: "" },
  });
  return { code: r.status, out: (r.stdout + r.stderr).trim() };
}

/** A copy 1.6.6 can read: no plugins.pkr.hcl, no metadata_options; plus a tarball to upload. */
function copyFor166(
  t: Test,
  mutate: (tpl: string, vars: string) => [string, string] = (a, b) => [a, b],
): string {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-packer-"));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const withoutImds = template.replace(/\n {2}metadata_options \{[^}]*\}\n/, "\n");
  if (withoutImds === template) throw new Error("metadata_options block not found in the template");
  const [tpl, vars] = mutate(withoutImds, variables);
  fs.writeFileSync(path.join(tmp, "eni-dpdk.pkr.hcl"), tpl);
  fs.writeFileSync(path.join(tmp, "variables.pkr.hcl"), vars);
  fs.writeFileSync(path.join(tmp, tarballName), "");
  return tmp;
}

t.test("the template's content", async (t) => {
  t.match(template, /source "amazon-ebs"/);
  t.match(
    template,
    /name\s*=\s*"amazon-eks-node-al2023-x86_64-standard-\$\{var\.kubernetes_version\}-v\*"/,
    "latest EKS AL2023 AMI for the version",
  );
  t.match(template, /most_recent\s*=\s*true/);
  t.match(variables, /default\s*=\s*\["602401143452"\]/, "EKS AMI publisher account");
  const imds = /metadata_options \{([^}]*)\}/.exec(template);
  t.ok(imds, "metadata_options present");
  t.match(imds?.[1], /http_tokens\s*=\s*"required"/, "IMDSv2 required");
  for (const v of [
    "region",
    "kubernetes_version",
    "instance_type",
    "subnet_id",
    "ami_name_prefix",
    "eni_dpdk_tarball",
  ]) {
    t.match(variables, new RegExp(`variable "${v}" \\{`), `variable ${v}`);
  }
  t.match(
    template,
    /provisioner "file" \{[^}]*source\s*=\s*var\.eni_dpdk_tarball/,
    "uploads the tarball",
  );
  t.match(template, /"\/tmp\/eni-dpdk\/install\.sh"/, "runs install.sh");
  t.match(
    template,
    /"systemd-analyze verify \/usr\/lib\/systemd\/system\/eni-dpdk\.service \/usr\/lib\/systemd\/system\/eni-dpdk-early\.service"/,
  );
  t.match(template, /"\/usr\/bin\/eni-dpdk validate \/etc\/eni-dpdk\/config\.toml"/);
  t.match(variables, /variable "hugepages_1g" \{[^]*type\s*=\s*number[^]*default\s*=\s*0/);
  // the kernel command line, only when asked for, and checked on the built image's default entry
  t.match(
    template,
    /"if \[ \$\{var\.hugepages_1g\} -gt 0 \]; then grubby --update-kernel=ALL --args='default_hugepagesz=1G hugepagesz=1G hugepages=\$\{var\.hugepages_1g\}'; fi"/,
  );
  t.match(template, /grubby --info=DEFAULT \| grep -q 'hugepages=\$\{var\.hugepages_1g\}'/);
  t.ok(
    template.indexOf("grubby --update-kernel") > template.indexOf('"/tmp/eni-dpdk/install.sh"'),
    "the command line is set after the install",
  );
  const plugins = fs.readFileSync(path.join(dir, "plugins.pkr.hcl"), "utf8");
  t.match(plugins, /required_plugins \{[^]*source\s*=\s*"github\.com\/hashicorp\/amazon"/);
  t.notMatch(template + variables, /required_plugins/, "required_plugins only in plugins.pkr.hcl");
});

t.test(
  "packer fmt -check: the directory as shipped is formatted",
  { skip: havePacker ? false : "packer not installed (apt-get install packer)" },
  async (t) => {
    const r = packer(["fmt", "-check", "."], dir);
    t.equal(r.code, 0, r.out);
    // ...and the check notices a misformatted file.
    const tmp = copyFor166(t, (tpl, vars) => [
      tpl.replace("  region        = var.region", "  region = var.region"),
      vars,
    ]);
    t.not(packer(["fmt", "-check", "."], tmp).code, 0, "misaligned '=' is reported");
  },
);

t.test(
  "packer validate (1.6.6, see the header)",
  { skip: havePacker ? false : "packer not installed (apt-get install packer)" },
  async (t) => {
    const tmp = copyFor166(t);
    const ok = packer(
      ["validate", "-var", `eni_dpdk_tarball=${path.join(tmp, tarballName)}`, "."],
      tmp,
    );
    t.equal(ok.code, 0, ok.out);

    const missing = packer(["validate", "."], tmp);
    t.not(missing.code, 0, "eni_dpdk_tarball is required");
    t.match(missing.out, /eni_dpdk_tarball/);

    const badName = packer(
      ["validate", "-var", `eni_dpdk_tarball=${path.join(tmp, "x.tgz")}`, "."],
      tmp,
    );
    t.not(badName.code, 0);
    t.match(badName.out, /must be an eni-dpdk-<version>-linux-x64\.tar\.gz/);

    const badVersion = packer(
      [
        "validate",
        "-var",
        "kubernetes_version=1.33.2",
        "-var",
        `eni_dpdk_tarball=${path.join(tmp, tarballName)}`,
        ".",
      ],
      tmp,
    );
    t.not(badVersion.code, 0);
    t.match(badVersion.out, /minor version such as/);

    const tarball = `eni_dpdk_tarball=${path.join(tmp, tarballName)}`;
    const pages = (n: string) =>
      packer(["validate", "-var", tarball, "-var", `hugepages_1g=${n}`, "."], tmp);
    const four = pages("4");
    t.equal(four.code, 0, four.out);
    for (const bad of ["-1", "1.5"]) {
      const r = pages(bad);
      t.not(r.code, 0, `hugepages_1g=${bad} is refused`);
      t.match(r.out, /whole number of pages/);
    }
    t.not(pages("many").code, 0, "hugepages_1g must be a number");

    const gone = path.join(tmp, "gone", tarballName);
    const absent = packer(["validate", "-var", `eni_dpdk_tarball=${gone}`, "."], tmp);
    t.not(absent.code, 0, "the tarball must exist");
    t.match(absent.out, /no such\s+file/);
  },
);

t.test(
  "validate fails on a broken template (the check can fail)",
  { skip: havePacker ? false : "packer not installed" },
  async (t) => {
    const typo = copyFor166(t, (tpl, vars) => [
      tpl.replace("most_recent = true", "most_recnt = true"),
      vars,
    ]);
    const r = packer(
      ["validate", "-var", `eni_dpdk_tarball=${path.join(typo, tarballName)}`, "."],
      typo,
    );
    t.not(r.code, 0);
    t.match(r.out, /most_recnt/);

    // Why plugins.pkr.hcl is left out: 1.6.6 rejects required_plugins.
    const withPlugins = copyFor166(t);
    fs.copyFileSync(path.join(dir, "plugins.pkr.hcl"), path.join(withPlugins, "plugins.pkr.hcl"));
    const old = packer(
      ["validate", "-var", `eni_dpdk_tarball=${path.join(withPlugins, tarballName)}`, "."],
      withPlugins,
    );
    if (/Packer v1\.6\./.test(version.stdout)) t.not(old.code, 0, "1.6.6 rejects required_plugins");
    else t.equal(old.code, 0, old.out);
  },
);
