/** Point TMPDIR at /dev/shm when it is unset and /dev/shm is a writable directory. */
export function preferTmpfs(): void;
