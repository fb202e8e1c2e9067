# Modern Packer (1.10+) installs builders as plugins: `packer init .` reads this block.
# Kept in a file of its own because Debian's packer 1.6.6 (used by the tests) rejects it; see
# test/product/packer.test.ts.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}
