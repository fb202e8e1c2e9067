#!/bin/sh
# PID 1 of the e2e guest (busybox). Mounts the basics, loads the NIC drivers (there is no udev),
# mounts the host's results share, runs the guest program, prints one result line, powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
# a real root is not world-writable (DPDK's EAL refuses to load drivers below one that is)
chmod 0755 /
KREL=$(uname -r)
# e2e.vfio=noiommu swaps in the vfio.ko rebuilt with CONFIG_VFIO_NOIOMMU; otherwise the stock one stays
case " $(cat /proc/cmdline) " in
  *" e2e.vfio=noiommu "*) cp /opt/e2e/vfio-noiommu.ko "/lib/modules/$KREL/kernel/drivers/vfio/vfio.ko" ;;
esac
/sbin/modprobe -a virtio_pci virtio_net e1000 e1000e 9pnet_virtio 9p
# e2e.root=vda: this initramfs only mounts the debootstrap'd disk and hands over to its systemd
case " $(cat /proc/cmdline) " in
  *" e2e.root=vda "*)
    /sbin/modprobe -a virtio_blk ext4
    mkdir -p /newroot
    mount -t ext4 -o rw /dev/vda /newroot || { echo "E2E: cannot mount /dev/vda"; poweroff -f; }
    umount /run /tmp /dev/shm 2>/dev/null
    mount --move /dev /newroot/dev
    mount --move /sys /newroot/sys
    mount --move /proc /newroot/proc
    exec switch_root /newroot /sbin/init
    ;;
esac
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /out || echo "E2E: no /out share"
ip link set lo up
# overlay from the results share (state carried across a "reboot"), if the host put one there
[ -f /out/carry.tar ] && tar -xf /out/carry.tar -C /
rc=0
if [ -x /opt/e2e/run ]; then /opt/e2e/run; rc=$?; else node /opt/e2e/guest.mjs; rc=$?; fi
echo "E2E-GUEST-EXIT rc=$rc"
sync
poweroff -f
