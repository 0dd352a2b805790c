/**
 * The Usage section's pure logic: when it loads, totals, amounts, the bars of the plot.
 */
import { describe, expect, it } from 'vitest';

import type { IUsageRow } from '../api/types';
import {
  barLayout,
  dayLabel,
  formatUsage,
  INITIAL_USAGE,
  USAGE_EVERY_MS,
  usageDue,
  usageSince,
  usageTotals,
  usageUnit,
  usedRows
} from '../logic/usage';

const row = (key: string, cpu: number, cost: number, gpu = 0): IUsageRow => ({
  key,
  cpu_seconds: cpu * 3600,
  cpu_hours: cpu,
  mem_gib_hours: 0,
  gpu_hours: gpu,
  wall_hours: cpu ? 1 : 0,
  cost
});

describe('usage', () => {
  it('loads when never loaded, when stale, or when asked; never twice at once', () => {
    const now = 10_000_000;
    expect(usageDue(INITIAL_USAGE, now)).toBe(true);
    const fresh = { ...INITIAL_USAGE, status: 'ok' as const, updated: now - 1000 };
    expect(usageDue(fresh, now)).toBe(false);
    expect(usageDue(fresh, now, true)).toBe(true);
    expect(usageDue({ ...fresh, updated: now - USAGE_EVERY_MS }, now)).toBe(true);
    expect(usageDue({ ...fresh, status: 'loading' }, now, true)).toBe(false);
    expect(usageSince(Date.UTC(2026, 11, 31), 30)).toBe('2026-12-01T00:00:00.000Z');
  });

  it('sums the rows and keeps only those that used anything', () => {
    const rows = [row('a', 1.5, 0.1), row('b', 0, 0), row('c', 0.5, 0.2, 2)];
    expect(usageTotals(rows)).toEqual({
      cpu_hours: 2,
      mem_gib_hours: 0,
      gpu_hours: 2,
      cost: 0.3
    });
    const report = { by: 'kind', since: 0, until: 1, currency: 'USD', rows };
    expect(usedRows(report).map(r => r.key)).toEqual(['a', 'c']);
  });

  it('formats hours, GiB-hours and cost readably', () => {
    expect(formatUsage('cpu_hours', 0)).toBe('0 h');
    expect(formatUsage('cpu_hours', 1.23456)).toBe('1.23 h');
    expect(formatUsage('cpu_hours', 0.0504)).toBe('0.05 h');
    expect(formatUsage('cpu_hours', 0.0001)).toBe('<0.001 h');
    expect(formatUsage('mem_gib_hours', 250.4)).toBe('250 GiB·h');
    expect(formatUsage('cost', 3.5, 'EUR')).toBe('3.50 EUR');
    expect(formatUsage('cost', 0.0042, 'EUR')).toBe('0.0042 EUR');
    expect(formatUsage('cost', 3.5, 'EUR', false)).toBe('3.50');
    expect(formatUsage('mem_gib_hours', 0.5, '', false)).toBe('0.5');
    expect(usageUnit('mem_gib_hours')).toBe('GiB·h');
    expect(usageUnit('cost', 'EUR')).toBe('EUR');
    expect(dayLabel('2026-12-07')).toBe('Dec 7');
    expect(dayLabel('not a day')).toBe('not a day');
  });

  it('lays out a bar a day, the largest full height, a small one still visible', () => {
    const bars = barLayout([0, 10, 0.001, 5], 100, 50);
    expect(bars).toHaveLength(4);
    expect(bars.map(b => b.x)).toEqual([2.5, 27.5, 52.5, 77.5]);
    expect(bars.every(b => b.width === 20)).toBe(true);
    expect(bars.map(b => b.height)).toEqual([0, 50, 1, 25]);
    expect(bars[1].y).toBe(0);
    expect(bars[3].y).toBe(25);
    expect(barLayout([0, 0], 100, 50).map(b => b.height)).toEqual([0, 0]);
    expect(barLayout([], 100, 50)).toEqual([]);
    expect(barLayout([Number.NaN, -1, 2], 30, 10).map(b => b.value)).toEqual([0, 0, 2]);
  });
});
