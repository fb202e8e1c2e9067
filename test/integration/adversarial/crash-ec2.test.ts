// Area: crash. `apply` killed with SIGKILL after each EC2 action took effect, before its answer
// (the EC2 emulator kills the caller); the next run converges (test/support/crash.ts says what that
// means and holds the crash points).
import { CRASH_POINTS, crashPointTests } from "../../support/crash.js";

crashPointTests(CRASH_POINTS.filter((p) => p.ec2));
