# An EKS-optimized AL2023 AMI with eni-dpdk baked in:
#   packer init packer/ && packer build -var eni_dpdk_tarball=eni-dpdk-0.1.0-linux-x64.tar.gz packer/
# Add -var hugepages_1g=N to reserve N 1 GiB hugepages on the kernel command line.
# Instances launched from it configure their ENIs from user-data, tags or NodeENI (docs/user-data.md).

locals {
  build_time = regex_replace(timestamp(), "[-:TZ]", "")
}

source "amazon-ebs" "eks_al2023" {
  region        = var.region
  instance_type = var.instance_type
  subnet_id     = var.subnet_id
  ssh_username  = "ec2-user"

  # The newest EKS-optimized AL2023 (standard variant) image for this Kubernetes version.
  source_ami_filter {
    filters = {
      name                = "amazon-eks-node-al2023-x86_64-standard-${var.kubernetes_version}-v*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = var.source_ami_owners
    most_recent = true
  }

  # IMDSv2 only on the build instance, as eni-dpdk itself requires on the nodes.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }

  ami_name        = "${var.ami_name_prefix}-${var.kubernetes_version}-${local.build_time}"
  ami_description = "EKS-optimized AL2023 for Kubernetes ${var.kubernetes_version} with eni-dpdk"
  ena_support     = true

  tags = {
    Name                 = "${var.ami_name_prefix}-${var.kubernetes_version}"
    "eni-dpdk:tarball"   = basename(var.eni_dpdk_tarball)
    "kubernetes-version" = var.kubernetes_version
    "source-ami"         = "{{ .SourceAMIName }}"
  }
}

build {
  sources = ["source.amazon-ebs.eks_al2023"]

  provisioner "file" {
    source      = var.eni_dpdk_tarball
    destination = "/tmp/eni-dpdk.tar.gz"
  }

  # Node from the distribution (security updates through dnf), then the release's own installer.
  # The service is enabled, never started here: the build instance must not attach ENIs.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} bash -euo pipefail {{ .Path }}"
    inline = [
      "dnf install -y ${var.node_package}",
      "rm -rf /tmp/eni-dpdk && mkdir -p /tmp/eni-dpdk",
      "tar -xzf /tmp/eni-dpdk.tar.gz -C /tmp/eni-dpdk",
      "/tmp/eni-dpdk/install.sh",
    ]
  }

  # 1 GiB hugepages from the kernel command line (AL2023 boots BLS entries: grubby edits all of
  # them). default_hugepagesz=1G makes systemd's /dev/hugepages mount a 1G one, so a DPDK app on
  # the host finds these pages there; pods get their own mount per page size from kubelet.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} bash -euo pipefail {{ .Path }}"
    inline = [
      "if [ ${var.hugepages_1g} -gt 0 ]; then grubby --update-kernel=ALL --args='default_hugepagesz=1G hugepagesz=1G hugepages=${var.hugepages_1g}'; fi",
      "if [ ${var.hugepages_1g} -gt 0 ]; then grubby --info=DEFAULT | grep -q 'hugepages=${var.hugepages_1g}'; fi",
    ]
  }

  # Check what was installed, as it will boot: unit files, the shipped config, the enablement.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} bash -euo pipefail {{ .Path }}"
    inline = [
      "systemd-analyze verify /usr/lib/systemd/system/eni-dpdk.service /usr/lib/systemd/system/eni-dpdk-early.service",
      "/usr/bin/eni-dpdk validate /etc/eni-dpdk/config.toml",
      "systemctl is-enabled eni-dpdk.service eni-dpdk-early.service",
      "test ! -e /var/lib/eni-dpdk/state.json",
      "cat /opt/eni-dpdk/VERSION",
      "rm -rf /tmp/eni-dpdk /tmp/eni-dpdk.tar.gz",
    ]
  }
}
