// sd_notify: READY/STATUS/WATCHDOG/STOPPING. The sd-notify addon is optional (it needs libsystemd
// to build); without it we run `systemd-notify` with argv. As root it reports its parent's pid, which
// is ours, so NotifyAccess=main accepts it. Without NOTIFY_SOCKET everything is a no-op.
import { run } from "./process.js";
import { loadSdNotify } from "./lazy.js";
import type { Logger } from "./log.js";

export interface Notifier {
  readonly via: "sd-notify" | "systemd-notify" | "none";
  ready(status: string): Promise<void>;
  status(status: string): Promise<void>;
  watchdog(): Promise<void>;
  stopping(status?: string): Promise<void>;
  /** WatchdogSec as milliseconds when systemd asked us to ping, else undefined */
  watchdogMs(): number | undefined;
}

export interface SdNotifyAddon {
  /** raw sd_notify state: newline-separated assignments, sent as one datagram */
  sendState(state: string): void;
}

export async function createNotifier(
  env: NodeJS.ProcessEnv,
  log: Logger,
  addonLoader: (log: Logger) => SdNotifyAddon | undefined = loadAddon,
): Promise<Notifier> {
  const watchdogMs = () => {
    const usec = Number(env.WATCHDOG_USEC);
    const pid = env.WATCHDOG_PID ? Number(env.WATCHDOG_PID) : process.pid;
    return usec > 0 && pid === process.pid ? Math.floor(usec / 1000) : undefined;
  };
  if (!env.NOTIFY_SOCKET) {
    const noop = async () => {};
    return { via: "none", ready: noop, status: noop, watchdog: noop, stopping: noop, watchdogMs };
  }
  const addon = addonLoader(log);
  // One datagram per transition, so READY=1 and its STATUS arrive together.
  const send = addon
    ? async (...assignments: string[]) => addon.sendState(assignments.join("\n") + "\n")
    : async (...assignments: string[]) => {
        // --no-block: without it systemd-notify follows up with a BARRIER=1 datagram sent from its
        // own pid, which NotifyAccess=main rejects with a warning in the journal at every call.
        const r = await run(["systemd-notify", "--no-block", ...assignments], {
          timeoutMs: 5000,
          env: { NOTIFY_SOCKET: env.NOTIFY_SOCKET },
        });
        if (r.code !== 0)
          log.warn("systemd-notify failed", {
            code: r.code,
            stderr: r.stderr.trim(),
            next: "check NotifyAccess= in the unit",
          });
      };
  return {
    via: addon ? "sd-notify" : "systemd-notify",
    ready: (s) => send("READY=1", `STATUS=${oneLine(s)}`),
    status: (s) => send(`STATUS=${oneLine(s)}`),
    watchdog: () => send("WATCHDOG=1"),
    stopping: (s) => (s ? send("STOPPING=1", `STATUS=${oneLine(s)}`) : send("STOPPING=1")),
    watchdogMs,
  };
}

function loadAddon(log: Logger): SdNotifyAddon | undefined {
  const { addon, error } = loadSdNotify<SdNotifyAddon>();
  if (!addon) log.debug("sd-notify addon not available; using systemd-notify", { error });
  return addon;
}

/** systemd shows one line; keep it short. */
export function oneLine(s: string): string {
  const flat = s.replace(/\s+/g, " ").trim();
  return flat.length > 200 ? flat.slice(0, 197) + "..." : flat;
}
