/**
 * The Usage section's state and its pure logic (no I/O): what the user used over the last
 * 30 days (totals, a series a day, by kind of object and by profile) and, for hub admins,
 * the platform's (by user, by profile, and the waste report).
 *
 * Usage is counted by the hour, so the section is not polled with the panel: it loads when
 * the panel first refreshes, again when it is older than :data:`USAGE_EVERY_MS`, and on the
 * panel's refresh button (:func:`usageDue`).
 */
import type { IUsageReport, IUsageRow, IUsageWaste } from '../api/types';

/** The period the section shows, in days. */
export const USAGE_DAYS = 30;
/** How old the section's data may get before a poll loads it again. */
export const USAGE_EVERY_MS = 5 * 60_000;

/** The metrics a plot can show, as the service names them in a row. */
export type UsageMetric = 'cpu_hours' | 'mem_gib_hours' | 'gpu_hours' | 'cost';

/** Each metric's name, and the short one of its plot's button and its table column. */
export const USAGE_METRICS: readonly { key: UsageMetric; label: string; short: string }[] = [
  { key: 'cpu_hours', label: 'CPU-hours', short: 'CPU' },
  { key: 'mem_gib_hours', label: 'Memory GiB-hours', short: 'Memory' },
  { key: 'gpu_hours', label: 'GPU-hours', short: 'GPU' },
  { key: 'cost', label: 'Cost', short: 'Cost' }
];

/** The user's own usage over the period. */
export interface IMyUsage {
  currency: string;
  /** One row a UTC day, oldest first (days without usage are zeros). */
  days: IUsageRow[];
  byKind: IUsageRow[];
  byProfile: IUsageRow[];
}

/** Everyone's usage over the period (hub admins). */
export interface IPlatformUsage {
  currency: string;
  byUser: IUsageRow[];
  byProfile: IUsageRow[];
  waste: IUsageWaste;
}

export interface IUsageState {
  /** ``idle``: never asked for yet. */
  status: 'idle' | 'loading' | 'ok' | 'error';
  mine: IMyUsage | null;
  /** Only for admins; null otherwise, or when it failed (``platformError`` says why). */
  platform: IPlatformUsage | null;
  platformError: string | null;
  error: string | null;
  /** When the last load ended (ms since the epoch). */
  updated: number | null;
  /** Which metric the plot shows. */
  metric: UsageMetric;
}

export const INITIAL_USAGE: IUsageState = {
  status: 'idle',
  mine: null,
  platform: null,
  platformError: null,
  error: null,
  updated: null,
  metric: 'cpu_hours'
};

/** Whether a refresh at ``now`` loads the section: never loaded, stale, or asked for. */
export function usageDue(state: IUsageState, now: number, force = false): boolean {
  if (state.status === 'loading') {
    return false;
  }
  return force || state.updated === null || now - state.updated >= USAGE_EVERY_MS;
}

/** The ``since`` of the section's period ending at ``now`` (ms), as ISO 8601. */
export function usageSince(now: number, days = USAGE_DAYS): string {
  return new Date(now - days * 86_400_000).toISOString();
}

/** The sums of ``rows`` (the period's totals); cost rounded as the service rounds it. */
export function usageTotals(rows: readonly IUsageRow[]): Record<UsageMetric, number> {
  const totals = { cpu_hours: 0, mem_gib_hours: 0, gpu_hours: 0, cost: 0 };
  for (const row of rows) {
    totals.cpu_hours += row.cpu_hours;
    totals.mem_gib_hours += row.mem_gib_hours;
    totals.gpu_hours += row.gpu_hours;
    totals.cost += row.cost;
  }
  totals.cost = Math.round(totals.cost * 1e6) / 1e6;
  return totals;
}

/** The rows of a report that used anything (a report by kind or profile lists only those). */
export function usedRows(report: IUsageReport): IUsageRow[] {
  return report.rows.filter(
    r => r.cpu_seconds > 0 || r.mem_gib_hours > 0 || r.gpu_hours > 0 || r.wall_hours > 0
  );
}

/**
 * An amount of a metric: hours to at most 3 significant digits, cost in its currency;
 * without the unit (a table's cells, whose header says it) when ``unit`` is false.
 */
export function formatUsage(
  metric: UsageMetric,
  value: number,
  currency = '',
  unit = true
): string {
  if (metric === 'cost') {
    const digits = value !== 0 && Math.abs(value) < 0.01 ? 4 : 2;
    return `${value.toFixed(digits)}${currency && unit ? ` ${currency}` : ''}`;
  }
  const amount = formatAmount(value);
  return unit ? `${amount} ${usageUnit(metric)}` : amount;
}

/** The unit of a metric's amounts (``currency`` for cost). */
export function usageUnit(metric: UsageMetric, currency = ''): string {
  return metric === 'cost' ? currency : metric === 'mem_gib_hours' ? 'GiB·h' : 'h';
}

function formatAmount(value: number): string {
  if (value === 0) {
    return '0';
  }
  const abs = Math.abs(value);
  if (abs >= 100) {
    return value.toFixed(0);
  }
  if (abs >= 1) {
    return String(Number(value.toPrecision(3)));
  }
  if (abs >= 0.001) {
    return value.toFixed(3).replace(/0+$/, '');
  }
  return '<0.001';
}

/** One bar of a plot, in the chart's coordinates (y down). */
export interface IBar {
  x: number;
  y: number;
  width: number;
  height: number;
  value: number;
}

/**
 * Bars for ``values`` across ``width`` (a gap of a fifth of each slot), scaled so the
 * largest reaches ``height``; a value above zero gets at least one unit, so a day with
 * little use still shows. All zeros (or none): bars of height 0.
 */
export function barLayout(values: readonly number[], width: number, height: number): IBar[] {
  if (!values.length) {
    return [];
  }
  const top = Math.max(0, ...values.filter(v => Number.isFinite(v)));
  const slot = width / values.length;
  const gap = values.length > 1 ? slot / 5 : 0;
  return values.map((v, i) => {
    const value = Number.isFinite(v) && v > 0 ? v : 0;
    const h = top > 0 && value > 0 ? Math.max(1, (value / top) * height) : 0;
    return {
      x: round(i * slot + gap / 2),
      y: round(height - h),
      width: round(slot - gap),
      height: round(h),
      value
    };
  });
}

/** ``YYYY-MM-DD`` as a short label (``Dec 7``), in UTC like the service's days. */
export function dayLabel(day: string): string {
  const date = new Date(`${day}T00:00:00Z`);
  if (Number.isNaN(date.getTime())) {
    return day;
  }
  return date.toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
