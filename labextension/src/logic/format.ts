/**
 * How numbers, sizes, durations and times read in the panel.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/format.spec.ts.
 */

const DASH = '–';

/** ``bytes`` in binary units, as the profile's limits are given: ``1.5 GiB``. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return DASH;
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  const text = trimZeros(value.toFixed(digits));
  return `${bytes < 0 ? '-' : ''}${text} ${units[unit]}`;
}

function trimZeros(text: string): string {
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}

/** CPU cores: ``2 cores``, ``0.5 cores``, ``1 core``; a dash when unlimited or unknown. */
export function formatCores(cores: number | null | undefined): string {
  if (cores === null || cores === undefined || !Number.isFinite(cores)) {
    return DASH;
  }
  const text = trimZeros(cores.toFixed(2));
  return `${text} ${cores === 1 ? 'core' : 'cores'}`;
}

/** A percentage with at most one decimal: ``12.5%``. */
export function formatPercent(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return DASH;
  }
  return `${trimZeros(value.toFixed(digits))}%`;
}

/** A share from 0 to 1 as a percentage: ``0.025`` → ``2.5%``. */
export function formatRatio(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined ? DASH : formatPercent(value * 100, digits);
}

/**
 * A duration in seconds, to the two largest units: ``42 s``, ``3 min 5 s``, ``1 h 2 min``,
 * ``2 d 3 h``; under a second ``0 s``; a dash for an unknown one.
 */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
    return DASH;
  }
  let rest = Math.floor(seconds);
  const units: [string, number][] = [
    ['d', 86400],
    ['h', 3600],
    ['min', 60],
    ['s', 1]
  ];
  const parts: string[] = [];
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n || (parts.length && parts.length < 2)) {
      parts.push(`${n} ${name}`);
    }
    if (parts.length === 2) {
      break;
    }
  }
  // "1 h 0 min" reads as "1 h"
  const kept = parts.filter((p, i) => i === 0 || !p.startsWith('0 '));
  return kept.length ? kept.join(' ') : '0 s';
}

/** Seconds between two ISO times (or from ``start`` to ``now``). */
export function secondsBetween(
  start: string | null | undefined,
  end: string | null | undefined,
  now: Date = new Date()
): number | null {
  if (!start) {
    return null;
  }
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : now.getTime();
  if (Number.isNaN(from) || Number.isNaN(to)) {
    return null;
  }
  return Math.max(0, (to - from) / 1000);
}

/** How long ago ``when`` was: ``just now``, ``5 min ago``, ``2 h 3 min ago``; ``in …`` ahead. */
export function formatAgo(
  when: string | number | null | undefined,
  now: Date = new Date()
): string {
  if (when === null || when === undefined || when === '') {
    return DASH;
  }
  const t = typeof when === 'number' ? when : Date.parse(when);
  if (Number.isNaN(t)) {
    return DASH;
  }
  const seconds = (now.getTime() - t) / 1000;
  if (Math.abs(seconds) < 10) {
    return 'just now';
  }
  const text = formatDuration(
    Math.abs(seconds) < 60 ? Math.abs(seconds) : Math.abs(seconds) - (Math.abs(seconds) % 60)
  );
  return seconds > 0 ? `${text} ago` : `in ${text}`;
}

/** A latency in ms: ``12 ms``, ``0.8 ms``, ``1.25 s``. */
export function formatLatency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) {
    return DASH;
  }
  if (ms >= 1000) {
    return `${trimZeros((ms / 1000).toFixed(2))} s`;
  }
  return `${trimZeros(ms.toFixed(ms < 10 ? 1 : 0))} ms`;
}

/** A request rate: ``0.5 req/s``, ``12 req/s``, ``3 req/min`` when slow. */
export function formatRate(perSecond: number | null | undefined): string {
  if (perSecond === null || perSecond === undefined || !Number.isFinite(perSecond)) {
    return DASH;
  }
  if (perSecond > 0 && perSecond < 0.1) {
    return `${trimZeros((perSecond * 60).toFixed(1))} req/min`;
  }
  return `${trimZeros(perSecond.toFixed(perSecond < 10 ? 2 : 0))} req/s`;
}

/** A digest shortened for display: ``sha256:0123456789ab``. */
export function shortDigest(digest: string | null | undefined, length = 12): string {
  if (!digest) {
    return DASH;
  }
  const [algo, hex] = digest.includes(':') ? digest.split(':', 2) : ['', digest];
  return algo ? `${algo}:${hex.slice(0, length)}` : hex.slice(0, length);
}

/** A metric value: at most four significant digits, integers as they are. */
export function formatMetric(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return DASH;
  }
  if (Number.isInteger(value) && Math.abs(value) < 1e6) {
    return String(value);
  }
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) {
    return value.toExponential(2);
  }
  return trimZeros(value.toPrecision(4));
}

/** The words a status is shown with: ``timed_out`` → ``timed out``. */
export function statusLabel(status: string | null | undefined): string {
  return status ? status.replace(/_/g, ' ') : 'never run';
}
