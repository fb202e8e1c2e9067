// Simulated nodes (their fake roots, FIFOs and emulators' files) go to os.tmpdir(): on tmpfs, as a
// real /sys and /run are in memory. On this machine's ext4 disk every file the simulated kernel
// creates costs about 0.4 ms (its vfio-pci bind 1.9-2.8 ms, against 0.25 on tmpfs), and every fsync
// of an atomic write more. The tests (scripts/test.mjs) and the boot bench use it.
import { accessSync, constants, statSync } from "node:fs";

/** Point TMPDIR at /dev/shm when it is unset and /dev/shm is a writable directory. */
export function preferTmpfs() {
  if (process.env.TMPDIR || !isWritableDir("/dev/shm")) return;
  process.env.TMPDIR = "/dev/shm";
}

function isWritableDir(dir) {
  try {
    accessSync(dir, constants.W_OK);
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}
