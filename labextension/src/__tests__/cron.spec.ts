/**
 * The cron preview says what the scheduler service will: same refusals, same run times.
 * Expected times were computed with the service's own ``cron_next``
 * (hub_ext/services/scheduler/cron.py), daylight-saving days included.
 */
import { describe, expect, it } from 'vitest';

import {
  checkCronForm,
  describeCron,
  firesEveryHour,
  formatInZone,
  instantsAt,
  isValidTimeZone,
  nextRuns,
  normalizeCron,
  previewCron,
  wallClock
} from '../logic/cron';

const iso = (dates: Date[]) => dates.map(d => d.toISOString().replace('.000Z', 'Z'));

describe('checkCronForm', () => {
  it('accepts five fields and the @ aliases', () => {
    expect(checkCronForm('0 6 * * *')).toBeNull();
    expect(checkCronForm('  */15   9-17 * * 1-5 ')).toBeNull();
    for (const alias of [
      '@yearly',
      '@annually',
      '@monthly',
      '@weekly',
      '@daily',
      '@midnight',
      '@hourly'
    ]) {
      expect(checkCronForm(alias)).toBeNull();
    }
  });

  it('refuses six-field crons (seconds), as the service does', () => {
    const error = checkCronForm('0 0 6 * * *');
    expect(error).toContain('has 6 fields, not 5');
    expect(error).toContain('seconds');
  });

  it('refuses too few fields, @reboot and empty input with the example', () => {
    expect(checkCronForm('0 6 * *')).toContain('has 4 fields, not 5');
    expect(checkCronForm('@reboot')).toContain('the @ forms are @yearly');
    expect(checkCronForm('   ')).toContain("e.g. '30 6 * * 1-5'");
  });

  it('normalises whitespace as the service stores it', () => {
    expect(normalizeCron(' 0\t6  * *\n* ')).toBe('0 6 * * *');
  });
});

describe('previewCron', () => {
  const from = new Date('2025-01-15T12:00:00Z');

  it('describes and lists the next three runs in the time zone', () => {
    const preview = previewCron('0 6 * * *', 'Europe/Berlin', 3, from);
    expect(preview.ok).toBe(true);
    if (preview.ok) {
      expect(preview.description).toBe('At 06:00');
      expect(iso(preview.next)).toEqual([
        '2025-01-16T05:00:00Z',
        '2025-01-17T05:00:00Z',
        '2025-01-18T05:00:00Z'
      ]);
    }
  });

  it("says what is wrong with '61 * * * *'", () => {
    const preview = previewCron('61 * * * *', 'UTC', 3, from);
    expect(preview.ok).toBe(false);
    if (!preview.ok) {
      expect(preview.error).toMatch(/^cron expression '61 \* \* \* \*' is not valid: /);
      expect(preview.error).toContain('61');
    }
  });

  it('refuses six fields even though cron-parser would read them', () => {
    const preview = previewCron('0 0 6 * * *', 'UTC', 3, from);
    expect(preview.ok).toBe(false);
    if (!preview.ok) {
      expect(preview.error).toContain('has 6 fields, not 5');
    }
  });

  it('says an expression that never fires never fires', () => {
    const preview = previewCron('0 0 30 2 *', 'UTC', 3, from);
    expect(preview.ok).toBe(false);
    if (!preview.ok) {
      expect(preview.error).toContain('never fires');
    }
  });

  it('refuses an unknown time zone with the IANA hint', () => {
    const preview = previewCron('0 6 * * *', 'Mars/Olympus', 3, from);
    expect(preview).toEqual({
      ok: false,
      error: "unknown time zone 'Mars/Olympus': use an IANA name such as 'Europe/Paris' or 'UTC'"
    });
    expect(isValidTimeZone('Europe/Paris')).toBe(true);
    expect(isValidTimeZone('')).toBe(false);
    expect(isValidTimeZone(' UTC')).toBe(false);
  });

  it('expands the @ aliases for the text and the times', () => {
    const preview = previewCron('@daily', 'Asia/Kolkata', 3, new Date('2025-06-01T00:00:00Z'));
    expect(preview.ok).toBe(true);
    if (preview.ok) {
      expect(preview.description).toBe('At 00:00');
      expect(iso(preview.next)).toEqual([
        '2025-06-01T18:30:00Z',
        '2025-06-02T18:30:00Z',
        '2025-06-03T18:30:00Z'
      ]);
    }
  });

  it('describes ranges and steps in words (cronstrue)', () => {
    expect(describeCron('*/15 9-17 * * 1-5')).toBe(
      'Every 15 minutes, between 09:00 and 17:59, Monday through Friday'
    );
  });
});

describe('nextRuns across daylight-saving changes (the service rule)', () => {
  const cases: [string, string, string, string[]][] = [
    // clocks go forward in Berlin on 2025-03-30 at 02:00: 02:30 does not exist, the run
    // happens once at the first instant after the gap (03:00 CEST = 01:00Z)
    [
      '30 2 * * *',
      'Europe/Berlin',
      '2025-03-29T12:00:00Z',
      ['2025-03-30T01:00:00Z', '2025-03-31T00:30:00Z', '2025-04-01T00:30:00Z']
    ],
    // two ticks in the gap are one run
    [
      '0,30 2 * * *',
      'Europe/Berlin',
      '2025-03-29T12:00:00Z',
      ['2025-03-30T01:00:00Z', '2025-03-31T00:00:00Z', '2025-03-31T00:30:00Z']
    ],
    // clocks go back on 2025-10-26: 02:30 happens twice, the job runs at the first
    [
      '30 2 * * *',
      'Europe/Berlin',
      '2025-10-25T12:00:00Z',
      ['2025-10-26T00:30:00Z', '2025-10-27T01:30:00Z', '2025-10-28T01:30:00Z']
    ],
    // an every-hour expression keeps firing by elapsed time in both copies of the hour
    [
      '*/30 * * * *',
      'Europe/Berlin',
      '2025-10-26T00:15:00Z',
      ['2025-10-26T00:30:00Z', '2025-10-26T01:00:00Z', '2025-10-26T01:30:00Z']
    ],
    // ...and simply has an hour less on the day clocks go forward
    [
      '*/30 * * * *',
      'Europe/Berlin',
      '2025-03-30T00:15:00Z',
      ['2025-03-30T00:30:00Z', '2025-03-30T01:00:00Z', '2025-03-30T01:30:00Z']
    ],
    [
      '0 9 * * *',
      'America/New_York',
      '2025-03-08T20:00:00Z',
      ['2025-03-09T13:00:00Z', '2025-03-10T13:00:00Z', '2025-03-11T13:00:00Z']
    ],
    [
      '30 1 * * *',
      'America/New_York',
      '2025-11-01T20:00:00Z',
      ['2025-11-02T05:30:00Z', '2025-11-03T06:30:00Z', '2025-11-04T06:30:00Z']
    ],
    // a half-hour DST change (Lord Howe Island) and weekdays
    [
      '15 10 * * 1-5',
      'Australia/Lord_Howe',
      '2025-04-04T00:00:00Z',
      ['2025-04-06T23:45:00Z', '2025-04-07T23:45:00Z', '2025-04-08T23:45:00Z']
    ],
    // leap days only
    [
      '0 0 29 2 *',
      'UTC',
      '2025-01-01T00:00:00Z',
      ['2028-02-29T00:00:00Z', '2032-02-29T00:00:00Z', '2036-02-29T00:00:00Z']
    ],
    // strictly after "now", even on a tick
    [
      '0 6 * * *',
      'UTC',
      '2025-01-01T06:00:00Z',
      ['2025-01-02T06:00:00Z', '2025-01-03T06:00:00Z', '2025-01-04T06:00:00Z']
    ]
  ];

  for (const [expression, tz, from, expected] of cases) {
    it(`${expression} in ${tz} after ${from}`, () => {
      expect(iso(nextRuns(expression, tz, 3, new Date(from)))).toEqual(expected);
    });
  }

  it('finds every-minute ticks quickly', () => {
    const started = Date.now();
    const runs = nextRuns('* * * * *', 'Europe/Berlin', 3, new Date('2025-03-30T00:58:30Z'));
    expect(iso(runs)).toEqual([
      '2025-03-30T00:59:00Z',
      '2025-03-30T01:00:00Z',
      '2025-03-30T01:01:00Z'
    ]);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('time-zone helpers', () => {
  it('reads the wall clock in a zone', () => {
    expect(
      new Date(wallClock(Date.parse('2025-07-01T10:00:00Z'), 'Europe/Berlin')).toISOString()
    ).toBe('2025-07-01T12:00:00.000Z');
  });

  it('finds no instant in a gap, two in a repeated hour', () => {
    const gap = instantsAt(Date.parse('2025-03-30T02:30:00Z'), 'Europe/Berlin');
    expect(gap.instants).toEqual([]);
    expect(new Date(gap.gapEnd!).toISOString()).toBe('2025-03-30T01:00:00.000Z');
    const fold = instantsAt(Date.parse('2025-10-26T02:30:00Z'), 'Europe/Berlin');
    expect(fold.instants.map(t => new Date(t).toISOString())).toEqual([
      '2025-10-26T00:30:00.000Z',
      '2025-10-26T01:30:00.000Z'
    ]);
  });

  it('knows which expressions fire every hour', () => {
    expect(firesEveryHour('*/15 * * * *')).toBe(true);
    expect(firesEveryHour('0 */1 * * *')).toBe(true);
    expect(firesEveryHour('@hourly')).toBe(true);
    expect(firesEveryHour('0 6 * * *')).toBe(false);
    expect(firesEveryHour('0 */2 * * *')).toBe(false);
  });

  it('formats a time as the zone shows it, with the DST abbreviation', () => {
    expect(formatInZone('2025-03-30T01:00:00Z', 'Europe/Berlin')).toBe('Sun 2025-03-30 03:00 CEST');
    expect(formatInZone('2025-03-30T00:30:00Z', 'Europe/Berlin')).toBe('Sun 2025-03-30 01:30 CET');
    expect(formatInZone(new Date('2025-01-16T05:00:00Z'), 'UTC')).toBe('Thu 2025-01-16 05:00 UTC');
    expect(formatInZone('2025-01-16T05:00:00Z', 'Mars/Olympus')).toBe('Thu 2025-01-16 05:00 UTC');
  });
});
