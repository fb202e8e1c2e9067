variable "region" {
  type        = string
  description = "AWS region to build in; the AMI is created there."
  default     = "us-west-2"
}

# Validation uses regex_replace rather than can(regex()): packer 1.6.6 (the CI check) evaluates
# can() to false even on a match.
variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes minor version whose EKS-optimized AL2023 AMI is the base, e.g. 1.33."
  default     = "1.33"

  validation {
    condition     = regex_replace(var.kubernetes_version, "^1\\.[0-9]+$", "") == ""
    error_message = "The kubernetes_version must be a minor version such as \"1.33\"."
  }
}

variable "instance_type" {
  type        = string
  description = "Build instance type (x86_64, ENA). The AMI runs on any x86_64 type."
  default     = "m6i.large"
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the build instance (needs a route to the internet or to VPC endpoints for SSM/S3/dnf); empty = the default VPC."
  default     = ""
}

variable "ami_name_prefix" {
  type        = string
  description = "Prefix of the AMI name; the Kubernetes version and a timestamp are appended."
  default     = "eni-dpdk-eks-al2023"
}

variable "eni_dpdk_tarball" {
  type        = string
  description = "Path of the release tarball from `npm run package` (eni-dpdk-<version>-linux-x64.tar.gz)."

  validation {
    condition     = regex_replace(var.eni_dpdk_tarball, "^(.*/)?eni-dpdk-[^/]+-linux-x64\\.tar\\.gz$", "") == ""
    error_message = "The eni_dpdk_tarball must be an eni-dpdk-<version>-linux-x64.tar.gz made by npm run package."
  }
}

variable "source_ami_owners" {
  type        = list(string)
  description = "Accounts that publish the EKS-optimized AMIs: 602401143452 in most regions; opt-in, GovCloud and China regions use other accounts (see the EKS documentation)."
  default     = ["602401143452"]
}

variable "node_package" {
  type        = string
  description = "AL2023 package providing Node.js for eni-dpdk (nodejs22 or nodejs20)."
  default     = "nodejs22"
}

# 1 GiB pages reserved at run time often fail once memory is fragmented; on the kernel command line
# they are taken at boot, before anything else. kubelet then advertises hugepages-1Gi from its start.
variable "hugepages_1g" {
  type        = number
  description = "1 GiB hugepages to reserve on the kernel command line (default_hugepagesz=1G hugepagesz=1G hugepages=N, set with grubby at build); 0 = leave the command line as it is."
  default     = 0

  validation {
    condition     = var.hugepages_1g >= 0 && floor(var.hugepages_1g) == var.hugepages_1g
    error_message = "The hugepages_1g must be a whole number of pages, 0 or more."
  }
}
