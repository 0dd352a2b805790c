import { describe, expect, it } from 'vitest';

import type { IDeployment, IDeploymentMetrics, IJob, IRun, IVersionMetrics } from '../api/types';
import {
  appendLog,
  describeTriggers,
  EMPTY_LOG,
  jobRows,
  latestRunByJob,
  liveVersion,
  nextRun,
  pruneHistory,
  pushSample,
  runProgress,
  sparklinePath,
  versionRows
} from '../logic/state';

function job(partial: Partial<IJob>): IJob {
  return {
    id: 'j1',
    owner: 'alice',
    name: 'daily',
    notebook_digest: 'sha256:0',
    source_path: 'daily.ipynb',
    parameters: {},
    profile: 'small',
    timeout_seconds: 3600,
    retry_attempts: 0,
    retry_backoff_seconds: 60,
    concurrency_policy: 'forbid',
    missed_run_policy: 'run_once',
    output_formats: ['ipynb'],
    shared_with_groups: [],
    paused: false,
    version: 1,
    triggers: [],
    notify: { on_failure: false, on_success: false, emails: [], webhook_url: null },
    keep_runs: null,
    keep_days: null,
    read_only: false,
    webhook_secret: null,
    created_at: '2025-01-01T00:00:00Z',
    updated_at: '2025-01-01T00:00:00Z',
    ...partial
  };
}

function run(partial: Partial<IRun>): IRun {
  return {
    id: 'r1',
    job_id: 'j1',
    job_version: 1,
    trigger_id: null,
    tick: null,
    status: 'succeeded',
    attempt: 1,
    retry_of: null,
    reason: '',
    parameters: {},
    notebook_digest: 'sha256:0',
    profile: 'small',
    timeout_seconds: 3600,
    queued_at: '2025-01-01T06:00:00Z',
    not_before: '2025-01-01T06:00:00Z',
    started_at: '2025-01-01T06:00:01Z',
    ended_at: '2025-01-01T06:01:00Z',
    claimed_by: null,
    heartbeat_at: null,
    cancel_requested_at: null,
    output_path: '/out.ipynb',
    log_path: '/log.txt',
    env_digest: null,
    mlflow_run_id: null,
    cells_done: null,
    cells_total: null,
    outputs_deleted_at: null,
    pipeline_run_id: null,
    step: null,
    ...partial
  };
}

describe('jobs', () => {
  it('finds each job’s newest run', () => {
    const latest = latestRunByJob([
      run({ id: 'b', job_id: 'j1', queued_at: '2025-01-02T00:00:00Z' }),
      run({ id: 'a', job_id: 'j1', queued_at: '2025-01-01T00:00:00Z' }),
      run({ id: 'c', job_id: 'j2', queued_at: '2025-01-01T00:00:00Z' }),
      run({ id: 'd', job_id: 'j2', queued_at: '2025-01-03T00:00:00Z' })
    ]);
    expect(latest.get('j1')?.id).toBe('b');
    expect(latest.get('j2')?.id).toBe('d');
  });

  it('takes the soonest cron tick, in its trigger’s zone, unless paused', () => {
    const j = job({
      triggers: [
        {
          id: 't1',
          trigger: { kind: 'cron', expression: '0 6 * * *', timezone: 'Europe/Berlin' },
          next_fire_at: '2025-01-02T05:00:00Z',
          last_fired_at: null
        },
        {
          id: 't2',
          trigger: { kind: 'cron', expression: '0 1 * * *', timezone: 'UTC' },
          next_fire_at: '2025-01-02T01:00:00Z',
          last_fired_at: null
        },
        {
          id: 't3',
          trigger: { kind: 'file', glob: 'data/*.csv' },
          next_fire_at: null,
          last_fired_at: null
        }
      ]
    });
    expect(nextRun(j)).toEqual({ at: '2025-01-02T01:00:00Z', timezone: 'UTC' });
    expect(nextRun({ ...j, paused: true })).toBeNull();
    expect(nextRun(job({}))).toBeNull();
    expect(describeTriggers(j)).toBe('0 6 * * * (Europe/Berlin), 0 1 * * * (UTC), file data/*.csv');
    expect(describeTriggers(job({}))).toBe('manual runs only');
  });

  it('shows progress of running runs only', () => {
    expect(runProgress(run({ status: 'running', cells_done: 3, cells_total: 12 }))).toEqual({
      done: 3,
      total: 12,
      fraction: 0.25
    });
    expect(runProgress(run({ status: 'running', cells_done: 20, cells_total: 12 }))?.done).toBe(12);
    expect(runProgress(run({ status: 'running', cells_done: null, cells_total: 4 }))?.done).toBe(0);
    expect(runProgress(run({ status: 'running', cells_total: 0 }))).toBeNull();
    expect(runProgress(run({ status: 'succeeded', cells_done: 3, cells_total: 3 }))).toBeNull();
    expect(runProgress(null)).toBeNull();
  });

  it('makes rows by name with status none for jobs never run', () => {
    const rows = jobRows(
      [job({ id: 'j2', name: 'weekly' }), job({ id: 'j1', name: 'daily' })],
      new Map([['j1', run({ status: 'failed' })]])
    );
    expect(rows.map(r => [r.job.name, r.status])).toEqual([
      ['daily', 'failed'],
      ['weekly', 'none']
    ]);
  });
});

describe('the log', () => {
  it('appends chunks in order and ignores a repeated one', () => {
    let log = appendLog(EMPTY_LOG, {
      text: 'a\n',
      offset: 0,
      next_offset: 2,
      complete: false,
      status: 'running',
      cells_done: 1,
      cells_total: 3
    });
    log = appendLog(log, {
      text: 'a\n',
      offset: 0,
      next_offset: 2,
      complete: false,
      status: 'running',
      cells_done: null,
      cells_total: null
    });
    log = appendLog(log, {
      text: 'b\n',
      offset: 2,
      next_offset: 4,
      complete: true,
      status: 'succeeded',
      cells_done: null,
      cells_total: null
    });
    expect(log).toMatchObject({ text: 'a\nb\n', offset: 4, complete: true, status: 'succeeded' });
  });
});

describe('deployments', () => {
  it('calls the version with most traffic live (the newest of equals)', () => {
    expect(liveVersion({ '1': 10, '2': 90 })).toBe('2');
    expect(liveVersion({ '1': 90, '2': 10 })).toBe('1');
    expect(liveVersion({ '1': 50, '3': 50 })).toBe('3');
    expect(liveVersion({ '1': 0 })).toBeNull();
    expect(liveVersion({})).toBeNull();
  });

  const version = (n: number, state: 'ready' | 'stopped' | 'starting' | 'failed') => ({
    version: n,
    model_uri: `models:/m/${n}`,
    profile: 'small',
    state,
    reason: null,
    created_at: '2025-01-01T00:00:00Z',
    ready_at: null,
    stopped_at: null,
    pending_percent: null,
    breaker: { open: false, reason: null, since: null, serving: false },
    signature: null,
    canary: null,
    lineage: null
  });
  const deployment: IDeployment = {
    owner: 'alice',
    name: 'churn',
    url: '/services/deployer/models/alice/churn/invocations',
    profile: 'small',
    replicas: 1,
    traffic: { '2': 90, '3': 10 },
    previous_version: 1,
    versions: [
      version(1, 'stopped'),
      version(2, 'ready'),
      version(3, 'ready'),
      version(4, 'failed')
    ],
    grants: { users: [], groups: [], services: [] },
    created_at: '2025-01-01T00:00:00Z',
    updated_at: '2025-01-01T00:00:00Z'
  };
  const vm = (partial: Partial<IVersionMetrics>): IVersionMetrics => ({
    state: 'ready',
    breaker: { open: false, reason: null, since: null, serving: false },
    traffic: 0,
    replicas_ready: 1,
    requests: 0,
    errors: 0,
    window_seconds: 60,
    window_requests: 0,
    window_errors: 0,
    rate: 0,
    error_rate: 0,
    latency_ms: { p50: null, p99: null },
    rows_seen: 0,
    rows_checked: 0,
    ...partial
  });

  it('lists versions newest first, hiding stopped ones without traffic', () => {
    const metrics: IDeploymentMetrics = {
      versions: {
        '3': vm({ breaker: { open: true, reason: 'errors', since: null, serving: false } })
      }
    };
    const rows = versionRows(deployment, metrics);
    expect(rows.map(r => [r.version.version, r.traffic, r.live, r.health])).toEqual([
      [4, 0, false, 'failed'],
      [3, 10, false, 'circuit open'],
      [2, 90, true, 'ready']
    ]);
  });

  it('keeps a traffic-weighted history of samples, the last 60', () => {
    const metrics: IDeploymentMetrics = {
      versions: {
        '2': vm({
          window_requests: 90,
          window_errors: 9,
          rate: 1.5,
          latency_ms: { p50: 10, p99: 50 }
        }),
        '3': vm({
          window_requests: 10,
          window_errors: 1,
          rate: 0.5,
          latency_ms: { p50: 20, p99: 100 }
        })
      }
    };
    let history = pushSample({}, 'churn', metrics, 1000);
    expect(history.churn).toEqual([{ t: 1000, p50: 11, p99: 55, rate: 2, errorRate: 0.1 }]);
    for (let i = 0; i < 70; i++) {
      history = pushSample(history, 'churn', metrics, 2000 + i);
    }
    expect(history.churn).toHaveLength(60);
    expect(history.churn[59].t).toBe(2069);
    const idle = pushSample({}, 'idle', { versions: { '1': vm({}) } }, 5);
    expect(idle.idle[0]).toMatchObject({ p50: null, p99: null, rate: 0, errorRate: 0 });
    expect(Object.keys(pruneHistory({ ...history, ...idle }, ['idle']))).toEqual(['idle']);
  });
});

describe('sparklinePath', () => {
  it('scales values into the box, y up', () => {
    expect(sparklinePath([0, 5, 10], 100, 10)).toBe('M0,10L50,5L100,0');
    expect(sparklinePath([1, 1], 10, 10, 2)).toBe('M0,5L10,5');
  });

  it('breaks the line at nulls and draws nothing without values', () => {
    expect(sparklinePath([1, null, 1], 10, 10)).toBe('M0,0M10,0');
    expect(sparklinePath([null, null], 10, 10)).toBe('');
    expect(sparklinePath([], 10, 10)).toBe('');
    expect(sparklinePath([0, 0], 10, 10)).toBe('M0,10L10,10');
    expect(sparklinePath([3], 10, 10)).toBe('M5,0');
  });
});
