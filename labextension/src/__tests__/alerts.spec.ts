/**
 * The Alerts section's pure logic: when it loads, the order shown, what an alert is about,
 * the figure that fired it.
 */
import { describe, expect, it } from 'vitest';

import type { IAlert } from '../api/types';
import {
  ALERTS_EVERY_MS,
  alertAbout,
  alertFigure,
  alertsDue,
  alertSince,
  INITIAL_ALERTS,
  recentResolved,
  RESOLVED_SHOWN,
  ruleLabel,
  showOwners,
  sortOpen
} from '../logic/alerts';

const NOW = Date.UTC(2026, 11, 7, 12);
const iso = (minutesAgo: number) => new Date(NOW - minutesAgo * 60_000).toISOString();

function alert(id: string, changes: Partial<IAlert> = {}): IAlert {
  return {
    id,
    key: `job_failed{job=${id},job_id=abc}`,
    rule: 'job_failed',
    owner: 'alice',
    labels: { job: id, job_id: 'abc' },
    severity: 'warning',
    summary: `Job alice/${id}: its latest run failed.`,
    value: null,
    state: 'firing',
    pending_since: iso(10),
    started_at: iso(10),
    resolved_at: null,
    ...changes
  };
}

describe('alerts', () => {
  it('loads when never loaded, every 30 s, or when asked; never twice at once', () => {
    expect(alertsDue(INITIAL_ALERTS, NOW)).toBe(true);
    const fresh = { ...INITIAL_ALERTS, status: 'ok' as const, updated: NOW - 5_000 };
    expect(alertsDue(fresh, NOW)).toBe(false);
    expect(alertsDue(fresh, NOW, true)).toBe(true);
    expect(alertsDue({ ...fresh, updated: NOW - ALERTS_EVERY_MS }, NOW)).toBe(true);
    expect(alertsDue({ ...fresh, status: 'loading' }, NOW, true)).toBe(false);
    expect(ALERTS_EVERY_MS).toBe(30_000);
  });

  it('shows firing alerts before pending ones, each newest first', () => {
    const list = [
      alert('p-new', { state: 'pending', started_at: null, pending_since: iso(1) }),
      alert('f-old', { started_at: iso(60), pending_since: iso(65) }),
      alert('f-new', { started_at: iso(2), pending_since: iso(7) }),
      alert('r', { state: 'resolved', resolved_at: iso(1) })
    ];
    expect(sortOpen(list).map(a => a.id)).toEqual(['f-new', 'f-old', 'p-new']);
    expect(alertSince(list[0])).toBe(iso(1));
    expect(alertSince(list[1])).toBe(iso(60));
    expect(alertSince(list[3])).toBe(iso(1));
  });

  it("keeps the last week's resolved alerts, newest first, at most ten", () => {
    const old = alert('old', { state: 'resolved', resolved_at: iso(8 * 24 * 60) });
    const many = Array.from({ length: 12 }, (_, i) =>
      alert(`r${i}`, { state: 'resolved', resolved_at: iso(i + 1) })
    );
    const shown = recentResolved([old, alert('open'), ...many.reverse()], NOW);
    expect(shown).toHaveLength(RESOLVED_SHOWN);
    expect(shown[0].id).toBe('r0');
    expect(shown.map(a => a.id)).not.toContain('old');
    expect(shown.map(a => a.id)).not.toContain('open');
  });

  it('says what an alert is about from its labels, ids left out', () => {
    expect(alertAbout(alert('nightly'))).toBe('job nightly');
    expect(
      alertAbout(
        alert('x', {
          rule: 'model_drift',
          labels: { deployment: 'churn', version: '3', feature: 'age' }
        })
      )
    ).toBe('model churn, version 3, feature age');
    expect(alertAbout(alert('x', { rule: 'disk_full', labels: { path: '/srv' } }))).toBe(
      'disk /srv'
    );
    expect(alertAbout(alert('x', { labels: { job: 'a', queue: 'gpu' } }))).toBe('job a, queue gpu');
    expect(alertAbout(alert('x', { rule: 'gpu_idle', labels: { server: 'alice/' } }))).toBe(
      'server alice/'
    );
    expect(
      alertAbout(
        alert('x', { rule: 'quota_nearly_exhausted', labels: { user: 'a', resource: 'gpu' } })
      )
    ).toBe('user a, quota gpu');
    expect(
      alertAbout(
        alert('x', { rule: 'quota_nearly_exhausted', labels: { group: 'g', resource: 'runs' } })
      )
    ).toBe('group g, quota runs');
    expect(alertAbout(alert('x', { labels: {}, key: 'rule{}' }))).toBe('rule{}');
    expect(ruleLabel('model_error_rate')).toBe('Model error rate');
  });

  it('shows the figure that fired an alert in its unit, none for a failed run', () => {
    const figure = (rule: string, value: number | null) => alertFigure(alert('x', { rule, value }));
    expect(figure('job_failed', null)).toBeNull();
    expect(figure('model_error_rate', 0.125)).toBe('12.5% of requests failed');
    expect(figure('model_latency', 2500)).toBe('p99 2.5 s');
    expect(figure('model_drift', 0.3456)).toBe('PSI 0.35');
    expect(figure('job_schedule_missed', 700)).toBe('11 min 40 s late');
    expect(figure('pipeline_schedule_missed', 3600)).toBe('1 h late');
    expect(figure('quota_nearly_exhausted', 0.9)).toBe('90% of the quota used');
    expect(figure('disk_full', 93.25)).toBe('93.3% full');
    expect(figure('gpu_idle', 5400)).toBe('idle 1 h 30 min');
    expect(figure('something_new', 1.23456)).toBe('1.235');
  });

  it("names owners only when the list holds someone else's or the platform's", () => {
    expect(showOwners([alert('a')], 'alice')).toBe(false);
    expect(showOwners([alert('a'), alert('b', { owner: 'bob' })], 'alice')).toBe(true);
    expect(showOwners([alert('d', { owner: null })], 'alice')).toBe(true);
  });
});
