/**
 * How cron schedules are shown: words for an expression and times in a zone. Whether an
 * expression is valid and when it runs is the scheduler's answer (tests/test_scheduler_preview.py).
 */
import { describe, expect, it } from 'vitest';

import { describeCron, formatInZone } from '../logic/cron';

describe('describeCron', () => {
  it('describes ranges, steps and the @ forms in words (cronstrue)', () => {
    expect(describeCron('*/15 9-17 * * 1-5')).toBe(
      'Every 15 minutes, between 09:00 and 17:59, Monday through Friday'
    );
    expect(describeCron('30 5 * * 1-5')).toBe('At 05:30, Monday through Friday');
    expect(describeCron('@daily')).toBe('At 00:00');
  });

  it('has no words for what it cannot read, and judges nothing', () => {
    expect(describeCron('61 * * * *')).toBe('');
    expect(describeCron('not cron')).toBe('');
  });
});

describe('formatInZone', () => {
  it('formats a time as the zone shows it, with the DST abbreviation', () => {
    expect(formatInZone('2025-03-30T01:00:00Z', 'Europe/Berlin')).toBe('Sun 2025-03-30 03:00 CEST');
    expect(formatInZone('2025-03-30T00:30:00Z', 'Europe/Berlin')).toBe('Sun 2025-03-30 01:30 CET');
    expect(formatInZone(new Date('2025-01-16T05:00:00Z'), 'UTC')).toBe('Thu 2025-01-16 05:00 UTC');
    expect(formatInZone('2025-01-16T05:00:00Z', 'Mars/Olympus')).toBe('Thu 2025-01-16 05:00 UTC');
  });
});
