# The image of testpmd-pod.yaml: Debian 12's DPDK 22.11. dpdk-testpmd is in dpdk-dev; the ENA PMD
# (librte-net-ena23) is not among the drivers the dpdk package pulls in, so it is named here.
#   docker build -f deploy/examples/testpmd.Dockerfile -t <registry>/dpdk-testpmd:22.11 .
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends dpdk-dev librte-net-ena23 \
 && rm -rf /var/lib/apt/lists/*
