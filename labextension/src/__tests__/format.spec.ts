import { describe, expect, it } from 'vitest';

import {
  formatAgo,
  formatBytes,
  formatCores,
  formatDuration,
  formatLatency,
  formatMetric,
  formatPercent,
  formatRate,
  formatRatio,
  secondsBetween,
  shortDigest,
  statusLabel
} from '../logic/format';

describe('formatDuration', () => {
  it('shows the two largest units, dropping a zero second one', () => {
    expect(formatDuration(0)).toBe('0 s');
    expect(formatDuration(0.4)).toBe('0 s');
    expect(formatDuration(42)).toBe('42 s');
    expect(formatDuration(60)).toBe('1 min');
    expect(formatDuration(185)).toBe('3 min 5 s');
    expect(formatDuration(3600)).toBe('1 h');
    expect(formatDuration(3725)).toBe('1 h 2 min');
    expect(formatDuration(2 * 86400 + 3 * 3600 + 59)).toBe('2 d 3 h');
    expect(formatDuration(86400 + 30)).toBe('1 d');
  });

  it('shows a dash for unknown or negative durations', () => {
    expect(formatDuration(null)).toBe('–');
    expect(formatDuration(-1)).toBe('–');
    expect(formatDuration(Number.NaN)).toBe('–');
  });

  it('measures runs, running ones up to now', () => {
    const now = new Date('2025-01-01T00:10:00Z');
    expect(secondsBetween('2025-01-01T00:00:00Z', '2025-01-01T00:01:05Z')).toBe(65);
    expect(secondsBetween('2025-01-01T00:00:00Z', null, now)).toBe(600);
    expect(secondsBetween(null, null)).toBeNull();
    expect(secondsBetween('garbage', null)).toBeNull();
  });

  it('says how long ago, or how long ahead', () => {
    const now = new Date('2025-01-01T12:00:00Z');
    expect(formatAgo('2025-01-01T11:59:55Z', now)).toBe('just now');
    expect(formatAgo('2025-01-01T11:59:30Z', now)).toBe('30 s ago');
    expect(formatAgo('2025-01-01T11:55:10Z', now)).toBe('4 min ago');
    expect(formatAgo(Date.parse('2025-01-01T09:58:00Z'), now)).toBe('2 h 2 min ago');
    expect(formatAgo('2025-01-01T12:05:00Z', now)).toBe('in 5 min');
    expect(formatAgo(null, now)).toBe('–');
  });
});

describe('sizes, cores and rates', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(2 * 1024 ** 3)).toBe('2 GiB');
    expect(formatBytes(1.25 * 1024 ** 3)).toBe('1.25 GiB');
    expect(formatBytes(123.4 * 1024 ** 2)).toBe('123 MiB');
    expect(formatBytes(null)).toBe('–');
  });

  it('formats cores, percentages and ratios', () => {
    expect(formatCores(1)).toBe('1 core');
    expect(formatCores(0.5)).toBe('0.5 cores');
    expect(formatCores(2)).toBe('2 cores');
    expect(formatCores(null)).toBe('–');
    expect(formatPercent(12.345)).toBe('12.3%');
    expect(formatPercent(100)).toBe('100%');
    expect(formatRatio(0.025)).toBe('2.5%');
    expect(formatRatio(0)).toBe('0%');
  });

  it('formats latencies and request rates', () => {
    expect(formatLatency(0.84)).toBe('0.8 ms');
    expect(formatLatency(12.4)).toBe('12 ms');
    expect(formatLatency(1250)).toBe('1.25 s');
    expect(formatLatency(null)).toBe('–');
    expect(formatRate(0)).toBe('0 req/s');
    expect(formatRate(0.5)).toBe('0.5 req/s');
    expect(formatRate(0.05)).toBe('3 req/min');
    expect(formatRate(42.4)).toBe('42 req/s');
  });
});

describe('digests, metrics and statuses', () => {
  it('shortens digests', () => {
    expect(shortDigest('sha256:0123456789abcdef0123')).toBe('sha256:0123456789ab');
    expect(shortDigest('0123456789abcdef')).toBe('0123456789ab');
    expect(shortDigest(null)).toBe('–');
  });

  it('formats metric values', () => {
    expect(formatMetric(3)).toBe('3');
    expect(formatMetric(0.912345)).toBe('0.9123');
    expect(formatMetric(1234.5678)).toBe('1235');
    expect(formatMetric(0.0000123)).toBe('1.23e-5');
    expect(formatMetric(-2.5)).toBe('-2.5');
  });

  it('labels statuses', () => {
    expect(statusLabel('timed_out')).toBe('timed out');
    expect(statusLabel(null)).toBe('never run');
  });
});
