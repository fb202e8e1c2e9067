import { deviceNodeFor, readPciDevice, restoreDriver, restoreHint } from "./pci.js";
import {
  type BindingRecord,
  type InflightOp,
  JOURNAL_PATH,
  journalEnd,
  journalPending,
  loadState,
  saveState,
  type State,
} from "./state.js";
import type { Host } from "./host.js";
import { RUN_DIR, VAR_DIR } from "./root.js";
import { type Logger } from "../core/log.js";
import { NETWORKD_DIR } from "./networkd.js";
import { OpError } from "../core/errors.js";
// Crash recovery: what a killed eni-dpdk left half-done in sysfs is finished or rolled back by the
// next one, before it observes anything (the intent journal is written by bindDevice/restoreDriver).
export interface RecoveryResult {
  bdf: string;
  op: InflightOp["op"];
  outcome: "finished" | "rolled-back" | "forgotten" | "failed";
  detail: string;
}

/**
 * Before anything else, under the lock: finish or roll back every operation a killed process left
 * in the journal, and give back to its kernel driver any recorded device that sits driverless with
 * our override (a crash between unbind and probe). A bind found complete is recorded in the state;
 * anything else is rolled back, and the caller's normal flow binds it again with every guard.
 */
export async function recoverInflight(
  host: Host,
  state: State,
  log: Logger,
): Promise<RecoveryResult[]> {
  const out: RecoveryResult[] = [];
  for (const op of await journalPending(host)) {
    const dlog = log.child({ bdf: op.bdf, op: op.op, started_at: op.startedAt, pid: op.pid });
    const dev = await readPciDevice(host, op.bdf);
    if (!dev || dev.vendor !== op.vendor || dev.device !== op.device) {
      await journalEnd(host, op.bdf);
      out.push({
        bdf: op.bdf,
        op: op.op,
        outcome: "forgotten",
        detail: dev
          ? `now ${dev.vendor}:${dev.device}, journalled ${op.vendor}:${op.device}`
          : "the device is gone",
      });
      dlog.warn("forgot an interrupted operation: the device changed", {
        detail: out.at(-1)!.detail,
      });
      continue;
    }
    if (op.op === "bind" && dev.driver === op.to && (await deviceNodeFor(host, op.bdf, op.to))) {
      if (op.mac && op.eniName !== undefined) {
        state.bindings[op.mac] = {
          mac: op.mac,
          bdf: op.bdf,
          vendor: op.vendor,
          device: op.device,
          originalDriver: op.from,
          driver: op.to,
          eniName: op.eniName,
          ...(op.eniId ? { eniId: op.eniId } : {}),
          boundAt: op.startedAt,
          ...(op.ifname ? { ifname: op.ifname } : {}),
        };
        // on record before the journal forgets it: the device has no netdev to be found by
        await saveState(host, state);
      }
      await journalEnd(host, op.bdf);
      out.push({
        bdf: op.bdf,
        op: op.op,
        outcome: "finished",
        detail: `was already on ${op.to}; recorded`,
      });
      dlog.warn("an interrupted bind had completed; recorded it", { driver: op.to });
      continue;
    }
    // bind not complete → back to where it came from; restore → finish going back
    const back = op.op === "bind" ? op.from || undefined : op.to || undefined;
    const rb = await restoreDriver(host, op.bdf, back, { log: dlog, mac: op.mac, journal: false });
    if (!rb.ok) {
      out.push({
        bdf: op.bdf,
        op: op.op,
        outcome: "failed",
        detail: rb.problem ?? "restore failed",
      });
      dlog.error("could not recover an interrupted operation; it stays in the journal", {
        error: rb.problem,
        next: restoreHint(rb, "see dmesg; eni-dpdk retries at its next run"),
      });
      continue;
    }
    if (op.op === "restore" && op.mac && state.bindings[op.mac]) {
      delete state.bindings[op.mac];
      await saveState(host, state);
    }
    await journalEnd(host, op.bdf);
    out.push({
      bdf: op.bdf,
      op: op.op,
      outcome: op.op === "bind" ? "rolled-back" : "finished",
      detail: `on ${rb.driver ?? "no driver"}${rb.ifname ? ` (${rb.ifname})` : ""}`,
    });
    dlog.warn(
      op.op === "bind" ? "rolled back an interrupted bind" : "finished an interrupted restore",
      { driver: rb.driver, ifname: rb.ifname },
    );
  }
  for (const { rec, was } of await interruptedRecordedBinds(host, state)) {
    const rb = await restoreDriver(host, rec.bdf, rec.originalDriver || undefined, {
      log,
      mac: rec.mac,
    });
    out.push({
      bdf: rec.bdf,
      op: "bind",
      outcome: rb.ok ? "rolled-back" : "failed",
      detail: rb.ok ? `was ${was}, now on ${rb.driver}` : `was ${was}: ${rb.problem ?? ""}`,
    });
    if (rb.ok)
      log.warn("rolled back an interrupted bind of a recorded device", {
        bdf: rec.bdf,
        was,
        driver: rb.driver,
      });
  }
  return out;
}

/**
 * Binds cut off that no journal entry names: a bind its record describes writes none
 * (BindOptions.recorded). A recorded device that carries our override but is not on the recorded
 * driver was interrupted; driverless (between unbind and probe), it would keep its netdev away for
 * good. Recovery gives it back to its kernel driver, as the journal's rollback does, and the caller
 * binds it again. (Also what an older version, or a hand-made override, leaves.)
 */
export async function interruptedRecordedBinds(
  host: Host,
  state: State,
): Promise<{ rec: BindingRecord; was: string }[]> {
  const out: { rec: BindingRecord; was: string }[] = [];
  for (const rec of Object.values(state.bindings)) {
    const dev = await readPciDevice(host, rec.bdf);
    if (
      !dev ||
      dev.driver === rec.driver ||
      dev.vendor !== rec.vendor ||
      dev.device !== rec.device ||
      dev.override !== rec.driver
    )
      continue;
    out.push({
      rec,
      was: dev.driver ? `on ${dev.driver} with the override ${rec.driver}` : "driverless",
    });
  }
  return out;
}

/**
 * The first thing every command that changes the host does, holding the lock: refuse our own
 * directories when they are unsafe, remove temp files of killed writers, load the state, and
 * finish or roll back operations a killed process left half-done. Returns the state.
 */
export async function prepareHost(
  host: Host,
  log: Logger,
  opts: { tempDirs?: string[] } = {},
): Promise<State> {
  host.checkOwnDirs();
  const state = await loadState(host);
  for (const dir of new Set([VAR_DIR, RUN_DIR, NETWORKD_DIR, ...(opts.tempDirs ?? [])])) {
    for (const p of await host.cleanStaleTemps(dir))
      log.info("removed a temp file left by an interrupted write", { path: p });
  }
  for (const r of await recoverInflight(host, state, log)) {
    if (r.outcome === "failed")
      throw new OpError(
        `could not recover the interrupted ${r.op} of ${r.bdf}: ${r.detail}`,
        `see \`dmesg\`; the operation stays in ${JOURNAL_PATH} and eni-dpdk retries it at its next run`,
        { bdf: r.bdf },
      );
  }
  return state;
}
