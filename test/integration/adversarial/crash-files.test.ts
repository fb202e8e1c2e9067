// Area: crash. `apply` killed with SIGKILL at each rename and unlink of eni-dpdk's files (strace
// kills it at the syscall); the next run converges (test/support/crash.ts says what that means and
// holds the crash points).
import { CRASH_POINTS, crashPointTests } from "../../support/crash.js";

crashPointTests(CRASH_POINTS.filter((p) => p.syscall && p.syscall.call !== "write"));
