#!/bin/sh
# A [dpdk].binding_script that fails after unbinding: it takes the NIC off its kernel driver, then
# exits 0 without binding it (dpdk-devbind.py also exits 0 on failed binds). eni-dpdk must notice in
# sysfs and put the NIC back on its kernel driver with its netdev.
for a in "$@"; do case $a in 0000:*) bdf=$a ;; esac; done
[ -n "$bdf" ] || exit 0
echo "$bdf" > "/sys/bus/pci/devices/$bdf/driver/unbind" && echo "unbound $bdf (argv: $*)" >> /run/e2e-failing-bind.log
echo "failing-bind: pretending the bind of $bdf failed" >&2
exit 0
