/**
 * How the panel and the Schedule dialog show cron schedules: words for an expression and
 * times in a zone. Display only.
 *
 * Whether an expression or a zone is valid, and when a job runs (daylight-saving changes
 * included), is the scheduler's to say: the dialog asks its preview route
 * (``POST /previews/cron``, hub_ext/services/scheduler/triggers/cron.py) and shows what it
 * answers. Nothing here judges an expression; a text cronstrue cannot read is simply not
 * described. No JupyterLab imports: unit-tested in src/__tests__/cron.spec.ts.
 */
import cronstrue from 'cronstrue';

/**
 * cronstrue's English words for ``expression`` (24-hour clock), or '' when it has none.
 *
 * Only for an expression the service accepted: the words go beside its next runs.
 */
export function describeCron(expression: string): string {
  try {
    return cronstrue.toString(expression, {
      use24HourTimeFormat: true,
      throwExceptionOnParseError: true,
      verbose: false
    });
  } catch {
    return '';
  }
}

/** A formatter per time zone, made the first time the zone is asked for (making one is slow). */
const displayFormatters = new Map<string, Intl.DateTimeFormat>();

function displayFormatter(tz: string): Intl.DateTimeFormat {
  let formatter = displayFormatters.get(tz);
  if (!formatter) {
    try {
      formatter = new Intl.DateTimeFormat('en-GB', {
        hourCycle: 'h23',
        weekday: 'short',
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        minute: '2-digit',
        timeZoneName: 'short',
        timeZone: tz
      });
    } catch {
      // a zone this browser does not know: still show the time, in UTC
      return displayFormatter('UTC');
    }
    displayFormatters.set(tz, formatter);
  }
  return formatter;
}

/**
 * ``date`` as the wall clock in ``tz`` shows it: ``Sun 2025-03-30 03:00 CEST``.
 *
 * Numeric and ordered the same in every locale, so that a list of run times reads like a
 * timetable; the zone's abbreviation says which side of a clock change a time is on.
 */
export function formatInZone(date: Date | string | number, tz: string): string {
  const parts: Record<string, string> = {};
  for (const part of displayFormatter(tz).formatToParts(new Date(date))) {
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
