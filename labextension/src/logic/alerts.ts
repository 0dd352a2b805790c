/**
 * The Alerts section's state and its pure logic (no I/O): the alerts the alerts service
 * holds about the user's models and jobs (for hub admins, everyone's and the platform's),
 * firing ones first, then pending ones, then those resolved lately.
 *
 * The service evaluates its rules every 30 s by default, so the section is not polled with
 * the panel's five seconds: it loads with the first refresh, again when older than
 * :data:`ALERTS_EVERY_MS`, and on the panel's refresh button (:func:`alertsDue`).
 */
import type { IAlert } from '../api/types';
import { formatDuration, formatLatency, formatPercent, formatRatio } from './format';

/** How old the section's data may get before a poll loads it again. */
export const ALERTS_EVERY_MS = 30_000;
/** Resolved alerts shown: those resolved in the last this many days… */
export const RESOLVED_DAYS = 7;
/** …at most this many, newest first. */
export const RESOLVED_SHOWN = 10;
/** Open alerts (pending, firing) asked for: the service's own default. */
export const OPEN_LIMIT = 100;
/** Resolved alerts asked for: enough to keep :data:`RESOLVED_SHOWN` after the cut-off. */
export const RESOLVED_LIMIT = 50;

/** What the service watches, as the section's empty state says it (docs/observability.md). */
export const WATCHED =
  "Your models' error rate, latency and drift, your jobs' and pipelines' failed runs, " +
  'missed schedules, servers holding GPUs idle and your quota nearly used up are watched; an ' +
  'alert shows here while it holds, and for a week after it resolves.';
/** What admins see besides: the platform's own alerts. */
export const WATCHED_ADMIN =
  "As an admin you also see everyone's alerts, the groups' run quotas and the data disk's.";

export interface IAlertsState {
  /** ``idle``: never asked for yet. */
  status: 'idle' | 'loading' | 'ok' | 'error';
  /** Firing first (newest first), then pending. */
  open: IAlert[];
  /** Resolved in the last :data:`RESOLVED_DAYS` days, newest first. */
  resolved: IAlert[];
  error: string | null;
  /** When the last load ended (ms since the epoch). */
  updated: number | null;
}

export const INITIAL_ALERTS: IAlertsState = {
  status: 'idle',
  open: [],
  resolved: [],
  error: null,
  updated: null
};

/** Whether a refresh at ``now`` loads the section: never loaded, stale, or asked for. */
export function alertsDue(state: IAlertsState, now: number, force = false): boolean {
  if (state.status === 'loading') {
    return false;
  }
  return force || state.updated === null || now - state.updated >= ALERTS_EVERY_MS;
}

function time(value: string | null | undefined): number {
  const t = value ? Date.parse(value) : Number.NaN;
  return Number.isNaN(t) ? 0 : t;
}

/** Since when an alert is in its state: fired, pending, or resolved. */
export function alertSince(alert: IAlert): string {
  if (alert.state === 'resolved') {
    return alert.resolved_at ?? alert.started_at ?? alert.pending_since;
  }
  return alert.state === 'firing' ? (alert.started_at ?? alert.pending_since) : alert.pending_since;
}

/** Open alerts in the order shown: firing before pending, each newest first. */
export function sortOpen(alerts: readonly IAlert[]): IAlert[] {
  const open = alerts.filter(a => a.state !== 'resolved');
  const rank = (a: IAlert) => (a.state === 'firing' ? 0 : 1);
  return open.sort(
    (a, b) =>
      rank(a) - rank(b) || time(alertSince(b)) - time(alertSince(a)) || (a.id < b.id ? -1 : 1)
  );
}

/** The resolved alerts worth showing at ``now``: the last week's, newest first, at most ten. */
export function recentResolved(alerts: readonly IAlert[], now: number): IAlert[] {
  const since = now - RESOLVED_DAYS * 86_400_000;
  return alerts
    .filter(a => a.state === 'resolved' && time(alertSince(a)) >= since)
    .sort((a, b) => time(alertSince(b)) - time(alertSince(a)))
    .slice(0, RESOLVED_SHOWN);
}

/** The labels that say what an alert is about, in this order (ids are left out). */
const ABOUT: readonly [string, string][] = [
  ['deployment', 'model'],
  ['version', 'version'],
  ['feature', 'feature'],
  ['job', 'job'],
  ['pipeline', 'pipeline'],
  ['server', 'server'],
  ['user', 'user'],
  ['group', 'group'],
  ['resource', 'quota'],
  ['path', 'disk']
];

/**
 * What an alert is about, from its labels: ``model churn, version 3``, ``job nightly``,
 * ``disk /srv/shipyard``; labels a rule adds later follow as ``name value``.
 */
export function alertAbout(alert: IAlert): string {
  const labels = alert.labels ?? {};
  const known = new Set(ABOUT.map(([k]) => k));
  const parts = ABOUT.filter(([k]) => labels[k]).map(([k, noun]) => `${noun} ${labels[k]}`);
  for (const [k, v] of Object.entries(labels).sort()) {
    if (!known.has(k) && !k.endsWith('_id')) {
      parts.push(`${k} ${v}`);
    }
  }
  return parts.join(', ') || alert.key;
}

/** The rule's key as words: ``model_error_rate`` → ``Model error rate``. */
export function ruleLabel(rule: string): string {
  const words = rule.replace(/_/g, ' ').trim();
  return words ? words[0].toUpperCase() + words.slice(1) : rule;
}

/**
 * The figure that fired the alert, in its rule's unit (null when the rule has none, as
 * for a failed run): an error rate as a share, a latency in ms, a drift as PSI, a missed
 * schedule as how late, a disk as how full, a server holding GPUs as how long it is idle, a
 * quota as how much of it is used.
 */
export function alertFigure(alert: IAlert): string | null {
  const v = alert.value;
  if (v === null || v === undefined || !Number.isFinite(v)) {
    return null;
  }
  switch (alert.rule) {
    case 'model_error_rate':
      return `${formatRatio(v)} of requests failed`;
    case 'model_latency':
      return `p99 ${formatLatency(v)}`;
    case 'model_drift':
      return `PSI ${v.toFixed(2)}`;
    case 'job_schedule_missed':
    case 'pipeline_schedule_missed':
      return `${formatDuration(v)} late`;
    case 'quota_nearly_exhausted':
      return `${formatRatio(v, 0)} of the quota used`;
    case 'disk_full':
      return `${formatPercent(v)} full`;
    case 'gpu_idle':
      return `idle ${formatDuration(v)}`;
    default:
      return String(Number(v.toPrecision(4)));
  }
}

/** Whether any alert is about someone other than ``me`` (an admin's list): show owners. */
export function showOwners(alerts: readonly IAlert[], me: string): boolean {
  return alerts.some(a => a.owner !== me);
}
