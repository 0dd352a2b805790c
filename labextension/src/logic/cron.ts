/**
 * Cron preview for the Schedule dialog: what an expression means and when it next runs.
 *
 * The scheduler service decides; this module only says beforehand what it will say, so
 * a typo shows up while typing instead of as a 400 after "Schedule". It mirrors the
 * service's rules (hub_ext/services/scheduler/models.py ``_check_cron`` and
 * hub_ext/services/scheduler/cron.py):
 *
 * - five fields, or one of the @ aliases (no ``@reboot``, no six-field crons with
 *   seconds: the service refuses them, so the preview does too);
 * - IANA time zones;
 * - ticks are wall-clock times in that zone, with the service's daylight-saving rule: a
 *   tick in the hour that clocks skip runs once at the first instant after the gap (so
 *   ``30 2 * * *`` runs at 03:00 that day); a wall-clock time that happens twice runs
 *   once, at its first occurrence, unless the hour field is ``*`` (then it keeps firing
 *   by elapsed time in both copies).
 *
 * The calendar work is cron-parser's (run in UTC on wall-clock times), the text is
 * cronstrue's; only the time-zone mapping is done here, with ``Intl``. No JupyterLab
 * imports: unit-tested in src/__tests__/cron.spec.ts.
 */
import { CronExpressionParser } from 'cron-parser';
import cronstrue from 'cronstrue';

/** The @ forms the service accepts, and the five-field expression each stands for. */
export const CRON_ALIASES: Readonly<Record<string, string>> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *'
};

/** The example every cron message ends with, as the service words it. */
const CRON_HELP =
  "use 'minute hour day-of-month month day-of-week' (e.g. '30 6 * * 1-5' for 06:30 on weekdays)";

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** A successful preview: the normalised expression, its description and next runs. */
export interface ICronPreviewOk {
  ok: true;
  expression: string;
  description: string;
  next: Date[];
}

/** A failed preview: what is wrong, worded like the service's 400. */
export interface ICronPreviewError {
  ok: false;
  error: string;
}

export type CronPreview = ICronPreviewOk | ICronPreviewError;

/** ``value`` with runs of whitespace made single spaces, as the service stores it. */
export function normalizeCron(value: string): string {
  return value.trim().split(/\s+/).filter(Boolean).join(' ');
}

/**
 * Check an expression as the service does (fields and aliases; not the calendar).
 *
 * @returns the error message, or null when the form is right.
 */
export function checkCronForm(value: string): string | null {
  const expression = normalizeCron(value);
  if (!expression) {
    return `the cron expression is empty: ${CRON_HELP}`;
  }
  if (expression.startsWith('@')) {
    if (!(expression in CRON_ALIASES)) {
      return (
        `cron expression '${value}' is not valid: the @ forms are ` +
        Object.keys(CRON_ALIASES).join(', ')
      );
    }
    return null;
  }
  const fields = expression.split(' ');
  if (fields.length !== 5) {
    const seconds =
      fields.length === 6
        ? ' (a sixth field for seconds is not supported: jobs run on whole minutes)'
        : '';
    return `cron expression '${value}' has ${fields.length} field${
      fields.length === 1 ? '' : 's'
    }, not 5${seconds}: ${CRON_HELP}`;
  }
  return null;
}

/** Whether ``tz`` is a time zone this browser knows (IANA names such as 'Europe/Paris'). */
export function isValidTimeZone(tz: string): boolean {
  if (!tz || tz !== tz.trim()) {
    return false;
  }
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** The message for a time zone that is not valid, as the service words it. */
export function timeZoneError(tz: string): string {
  return `unknown time zone '${tz}': use an IANA name such as 'Europe/Paris' or 'UTC'`;
}

/** The five-field expression an expression stands for (aliases expanded). */
function expand(expression: string): string {
  return CRON_ALIASES[expression] ?? expression;
}

/** Whether the hour field is ``*`` (or ``*\/1``): the service's "fires every hour". */
export function firesEveryHour(expression: string): boolean {
  const normal = normalizeCron(expression);
  if (normal === '@hourly') {
    return true;
  }
  const fields = normal.split(' ');
  return fields.length === 5 && (fields[1] === '*' || fields[1] === '*/1');
}

/** cronstrue's English description (24-hour clock), or throws its parse error. */
export function describeCron(expression: string): string {
  return cronstrue.toString(expand(normalizeCron(expression)), {
    use24HourTimeFormat: true,
    throwExceptionOnParseError: true,
    verbose: false
  });
}

// ------------------------------------------------------------------ time zones

/**
 * A formatter per time zone: one ``Intl.DateTimeFormat`` of ``locale`` and ``options`` for
 * each zone, made the first time the zone is asked for (making one is slow).
 */
function formatterCache(
  locale: string,
  options: Intl.DateTimeFormatOptions
): { has(tz: string): boolean; get(tz: string): Intl.DateTimeFormat } {
  const cache = new Map<string, Intl.DateTimeFormat>();
  return {
    has: tz => cache.has(tz),
    get: tz => {
      let f = cache.get(tz);
      if (!f) {
        f = new Intl.DateTimeFormat(locale, { ...options, timeZone: tz });
        cache.set(tz, f);
      }
      return f;
    }
  };
}

const fieldsFormatters = formatterCache('en-US', {
  hourCycle: 'h23',
  year: 'numeric',
  month: 'numeric',
  day: 'numeric',
  hour: 'numeric',
  minute: 'numeric',
  second: 'numeric'
});

/**
 * The wall-clock time in ``tz`` at ``instant`` (ms since the epoch), as the ms of the
 * same fields read in UTC.
 */
export function wallClock(instant: number, tz: string): number {
  const parts: Record<string, number> = {};
  for (const part of fieldsFormatters.get(tz).formatToParts(new Date(instant))) {
    if (part.type !== 'literal') {
      parts[part.type] = Number(part.value);
    }
  }
  const ms = instant - Math.floor(instant / 1000) * 1000;
  return (
    Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour % 24, parts.minute, parts.second) +
    ms
  );
}

/** The zone's offset from UTC at ``instant``, in ms (east positive). */
export function zoneOffset(instant: number, tz: string): number {
  return wallClock(instant, tz) - instant;
}

/**
 * The instants at which the wall clock in ``tz`` shows ``wall`` (ms of the fields in UTC).
 *
 * One instant normally; two in the hour that happens twice (earliest first); none in the
 * hour that clocks skip, where ``gapEnd`` is then the first instant after the gap.
 */
export function instantsAt(
  wall: number,
  tz: string
): { instants: number[]; gapEnd: number | null } {
  const before = zoneOffset(wall - DAY_MS, tz);
  const after = zoneOffset(wall + DAY_MS, tz);
  const instants: number[] = [];
  for (const offset of before === after ? [before] : [before, after]) {
    const t = wall - offset;
    if (zoneOffset(t, tz) === offset && !instants.includes(t)) {
      instants.push(t);
    }
  }
  instants.sort((a, b) => a - b);
  if (instants.length || before === after) {
    return { instants, gapEnd: null };
  }
  // in a gap: the transition lies between the two candidate instants; find its minute
  let lo = wall - Math.max(before, after);
  let hi = wall - Math.min(before, after);
  while (hi - lo > 60_000) {
    const mid = lo + Math.floor((hi - lo) / 120_000) * 60_000;
    if (zoneOffset(mid, tz) === before) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return { instants, gapEnd: hi };
}

/**
 * The next ``count`` run times of ``expression`` in ``tz`` strictly after ``from``.
 *
 * Throws cron-parser's error for an expression it cannot read, and an error saying so
 * for one that never fires (the 30th of February).
 */
export function nextRuns(
  expression: string,
  tz: string,
  count = 3,
  from: Date = new Date()
): Date[] {
  const normal = normalizeCron(expression);
  const everyHour = firesEveryHour(normal);
  const now = from.getTime();
  // wall-clock ticks, computed in UTC where no clock jumps; started a little before now so
  // that a tick in a repeated hour is seen from its first copy
  const start = wallClock(now, tz) - 3 * HOUR_MS;
  let ticks;
  try {
    ticks = CronExpressionParser.parse(expand(normal), {
      tz: 'UTC',
      currentDate: new Date(start)
    });
  } catch (e) {
    if (neverFires(e)) {
      throw new Error(`cron expression '${expression}' never fires (e.g. the 30th of February)`);
    }
    throw e;
  }
  const found: number[] = [];
  for (let i = 0; i < 100_000; i++) {
    let wall: number;
    try {
      wall = ticks.next().getTime();
    } catch {
      if (found.length) {
        break; // a year-bounded expression that has no more ticks
      }
      throw new Error(`cron expression '${expression}' never fires (e.g. the 30th of February)`);
    }
    const { instants, gapEnd } = instantsAt(wall, tz);
    let candidates: number[];
    if (gapEnd !== null) {
      candidates = everyHour ? [] : [gapEnd];
    } else if (instants.length > 1 && !everyHour) {
      candidates = [instants[0]];
    } else {
      candidates = instants;
    }
    for (const t of candidates) {
      if (t > now && !found.includes(t)) {
        found.push(t);
      }
    }
    found.sort((a, b) => a - b);
    found.splice(count); // only the soonest are wanted
    // offsets are at most 14 h: no later wall tick maps before found[count - 1]
    if (found.length >= count && wall - 15 * HOUR_MS > found[count - 1]) {
      break;
    }
  }
  return found.slice(0, count).map(t => new Date(t));
}

function neverFires(e: unknown): boolean {
  const message = String((e as Error)?.message ?? e);
  return /Invalid explicit day of month definition/i.test(message);
}

/**
 * Everything the dialog shows about ``expression`` in ``tz``: its description and the
 * next ``count`` runs, or the error the service would answer with.
 */
export function previewCron(
  expression: string,
  tz: string,
  count = 3,
  from: Date = new Date()
): CronPreview {
  const formError = checkCronForm(expression);
  if (formError) {
    return { ok: false, error: formError };
  }
  if (!isValidTimeZone(tz)) {
    return { ok: false, error: timeZoneError(tz) };
  }
  const normal = normalizeCron(expression);
  let next: Date[];
  try {
    next = nextRuns(normal, tz, count, from);
  } catch (e) {
    const message = String((e as Error)?.message ?? e);
    return {
      ok: false,
      error: message.startsWith('cron expression')
        ? message
        : `cron expression '${expression}' is not valid: ${message}`
    };
  }
  let description: string;
  try {
    description = describeCron(normal);
  } catch (e) {
    return { ok: false, error: `cron expression '${expression}' is not valid: ${String(e)}` };
  }
  return { ok: true, expression: normal, description, next };
}

// ------------------------------------------------------------------ formatting

const displayFormatters = formatterCache('en-GB', {
  hourCycle: 'h23',
  weekday: 'short',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  timeZoneName: 'short'
});

/**
 * ``date`` as the wall clock in ``tz`` shows it: ``Sun 2025-03-30 03:00 CEST``.
 *
 * Numeric and ordered the same in every locale, so that a list of run times reads like a
 * timetable; the zone's abbreviation says which side of a clock change a time is on.
 */
export function formatInZone(date: Date | string | number, tz: string): string {
  if (!displayFormatters.has(tz) && !isValidTimeZone(tz)) {
    tz = 'UTC'; // a zone this browser does not know: still show the time
  }
  const parts: Record<string, string> = {};
  for (const part of displayFormatters.get(tz).formatToParts(new Date(date))) {
    parts[part.type] = part.value;
  }
  return `${parts.weekday} ${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute} ${parts.timeZoneName}`;
}

/** The browser's own time zone (``Intl``), or UTC when it does not say. */
export function browserTimeZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}
