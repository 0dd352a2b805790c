/**
 * The panel's model with fake clients: sections load on their own, errors stay in their
 * section, tracking that is not set up is an empty state, and actions refresh.
 */
import { describe, expect, it, vi } from 'vitest';

import { ShipyardAPIError } from '../api/request';
import type { IAuditRecord, IDeployment, IJob, IRun } from '../api/types';
import { AUDIT_PAGE } from '../logic/audit';
import { IShipyardClients, ShipyardModel } from '../panel/model';

const job = (id: string, name: string, paused = false) =>
  ({ id, name, owner: 'alice', paused, triggers: [], read_only: false }) as unknown as IJob;
const run = (id: string, jobId: string, queued: string) =>
  ({ id, job_id: jobId, status: 'succeeded', queued_at: queued }) as unknown as IRun;
const deployment = (name: string, traffic: Record<string, number>) =>
  ({ name, owner: 'alice', traffic, versions: [], previous_version: 1 }) as unknown as IDeployment;

function clients(overrides: Record<string, unknown> = {}) {
  const c = {
    server: {
      profile: vi.fn(async () => ({ user: 'alice' })),
      experiments: vi.fn(async () => ({ tracking_ui: 'http://mlflow', runs: [] }))
    },
    scheduler: {
      listJobs: vi.fn(async () => [job('j2', 'weekly'), job('j1', 'daily')]),
      listRuns: vi.fn(async (_query?: { jobId?: string; limit?: number }) => [
        run('r2', 'j1', '2025-01-02T00:00:00Z'),
        run('r1', 'j1', '2025-01-01T00:00:00Z')
      ]),
      runNow: vi.fn(async () => run('r3', 'j1', '2025-01-03T00:00:00Z')),
      updateJob: vi.fn(async (_id: string, changes: { paused: boolean }) => ({
        ...job('j1', 'daily'),
        ...changes
      }))
    },
    deployer: {
      list: vi.fn(async () => [deployment('churn', { '2': 100 })]),
      metrics: vi.fn(async () => ({
        versions: {
          '2': { window_requests: 10, window_errors: 0, rate: 0.2, latency_ms: { p50: 5, p99: 9 } }
        }
      })),
      rollback: vi.fn(async () => deployment('churn', { '1': 100 }))
    },
    audit: {
      records: vi.fn(async (_query?: Record<string, unknown>) => ({
        records: [] as IAuditRecord[],
        next_before: null as number | null
      })),
      verify: vi.fn(async () => ({
        ok: true,
        file_records: 0,
        table_records: 0,
        first_seq: null,
        last_seq: null,
        problems: []
      }))
    },
    ...overrides
  };
  return c as unknown as IShipyardClients & typeof c;
}

describe('ShipyardModel', () => {
  it('loads the four sections and signals each change', async () => {
    const model = new ShipyardModel(clients());
    const changes = vi.fn();
    model.changed.connect(changes);
    await model.refresh();
    const s = model.state;
    expect(s.profile).toMatchObject({ status: 'ok', data: { user: 'alice' } });
    expect(s.experiments.status).toBe('ok');
    expect(s.jobs.data?.map(r => [r.job.name, r.latest?.id ?? null, r.status])).toEqual([
      ['daily', 'r2', 'succeeded'],
      ['weekly', null, 'none']
    ]);
    expect(s.deployments.data?.[0]).toMatchObject({ metricsError: null });
    expect(s.history.churn).toHaveLength(1);
    expect(changes).toHaveBeenCalledTimes(4);
  });

  it('keeps one service’s error in its own section, with the data it had', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    c.scheduler.listJobs.mockRejectedValueOnce(
      new ShipyardAPIError('The scheduler is not reachable', 502)
    );
    await model.refresh();
    expect(model.state.jobs.status).toBe('error');
    expect(model.state.jobs.error).toBe('The scheduler is not reachable');
    expect(model.state.jobs.data).toHaveLength(2);
    expect(model.state.deployments.status).toBe('ok');
  });

  it('shows tracking that is not configured as the empty state', async () => {
    const c = clients();
    c.server.experiments.mockRejectedValue(
      new ShipyardAPIError('Experiment tracking is not configured on this hub', 503)
    );
    const model = new ShipyardModel(c);
    await model.refresh();
    expect(model.state.experiments).toMatchObject({
      status: 'unavailable',
      error: 'Experiment tracking is not configured on this hub'
    });
  });

  it('asks MLflow at most every 30 s unless forced', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    await model.refresh();
    expect(c.server.experiments).toHaveBeenCalledTimes(1);
    await model.refresh(true);
    expect(c.server.experiments).toHaveBeenCalledTimes(2);
  });

  it('asks for the newest run of jobs beyond the first page of runs', async () => {
    const c = clients();
    const many = Array.from({ length: 200 }, (_, i) => run(`r${i}`, 'j1', '2025-01-01T00:00:00Z'));
    c.scheduler.listRuns.mockImplementation(async (q?: { jobId?: string; limit?: number }) =>
      q?.jobId === 'j2' ? [run('old', 'j2', '2024-01-01T00:00:00Z')] : many
    );
    const model = new ShipyardModel(c);
    await model.refreshJobs();
    expect(model.state.jobs.data?.find(r => r.job.id === 'j2')?.latest?.id).toBe('old');
    expect(c.scheduler.listRuns).toHaveBeenCalledWith({ jobId: 'j2', limit: 1 });
  });

  it('keeps a deployment whose metrics fail, saying why', async () => {
    const c = clients();
    c.deployer.metrics.mockRejectedValue(new ShipyardAPIError('no such deployment', 404));
    const model = new ShipyardModel(c);
    await model.refreshDeployments();
    expect(model.state.deployments.data?.[0]).toMatchObject({
      metrics: null,
      metricsError: 'no such deployment'
    });
  });

  it('pauses with the opposite of the job’s state and rolls back, refreshing after', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.togglePause(job('j1', 'daily', true));
    expect(c.scheduler.updateJob).toHaveBeenCalledWith('j1', { paused: false });
    await model.rollback('churn');
    expect(c.deployer.rollback).toHaveBeenCalledWith('churn', undefined);
    expect(c.deployer.list).toHaveBeenCalled();
  });

  it('lets an action’s error reach the caller', async () => {
    const c = clients();
    c.scheduler.runNow.mockRejectedValue(new ShipyardAPIError('job daily is already running', 409));
    const model = new ShipyardModel(c);
    await expect(model.runNow(job('j1', 'daily'))).rejects.toThrow('already running');
  });
});

const rec = (seq: number, action = 'server.start') =>
  ({ seq, action, outcome: 'allowed', __timestamp__: '2026-12-06T16:00:00Z' }) as IAuditRecord;

/** Clients whose server says the user is (or is not) a hub admin. */
function adminClients(admin: boolean) {
  const c = clients();
  c.server.profile.mockResolvedValue({ user: 'root', admin } as never);
  return c;
}

describe('ShipyardModel: the Audit section', () => {
  it('never asks the audit service for a user who is not an admin', async () => {
    const c = adminClients(false);
    const model = new ShipyardModel(c);
    await model.refresh();
    await model.refresh(true);
    await model.loadAudit();
    await model.loadMoreAudit();
    await model.verifyAudit();
    expect(c.audit.records).not.toHaveBeenCalled();
    expect(c.audit.verify).not.toHaveBeenCalled();
    expect(model.state.audit).toMatchObject({ admin: false, status: 'idle' });
  });

  it('loads the newest records once an admin’s profile arrives, and not on every poll', async () => {
    const c = adminClients(true);
    c.audit.records.mockResolvedValue({ records: [rec(2), rec(1)], next_before: null });
    const model = new ShipyardModel(c);
    await model.refresh();
    expect(c.audit.records).toHaveBeenCalledTimes(1);
    expect(c.audit.records).toHaveBeenCalledWith({ limit: AUDIT_PAGE });
    expect(model.state.audit).toMatchObject({ admin: true, status: 'ok', nextBefore: null });
    expect(model.state.audit.records.map(r => r.seq)).toEqual([2, 1]);
    // the 5 s poll: every read of the trail is itself recorded, so it is not repeated
    await model.refresh();
    await model.refresh();
    expect(c.audit.records).toHaveBeenCalledTimes(1);
    // the refresh button (forced) reads it again, with the filters shown
    await model.loadAudit({ user: 'alice', action: 'server', since: '' });
    await model.refresh(true);
    expect(c.audit.records).toHaveBeenLastCalledWith({
      limit: AUDIT_PAGE,
      user: 'alice',
      action: 'server'
    });
    expect(c.audit.records).toHaveBeenCalledTimes(3);
  });

  it('pages back with before= and the same filters', async () => {
    const c = adminClients(true);
    c.audit.records
      .mockResolvedValueOnce({ records: [], next_before: null }) // when the profile arrives
      .mockResolvedValueOnce({ records: [rec(60), rec(59)], next_before: 59 })
      .mockResolvedValueOnce({ records: [rec(58)], next_before: null });
    const model = new ShipyardModel(c);
    await model.refreshProfile();
    await model.loadAudit({ user: '', action: 'server', since: '7d' });
    await model.loadMoreAudit();
    expect(c.audit.records).toHaveBeenLastCalledWith({
      limit: AUDIT_PAGE,
      action: 'server',
      since: '7d',
      before: 59
    });
    expect(model.state.audit.records.map(r => r.seq)).toEqual([60, 59, 58]);
    await model.loadMoreAudit(); // no next page: nothing asked
    expect(c.audit.records).toHaveBeenCalledTimes(3);
  });

  it('drops the answer of a load that a newer one replaced', async () => {
    const c = adminClients(true);
    let release: (v: unknown) => void = () => undefined;
    c.audit.records
      .mockImplementationOnce(async () => ({ records: [], next_before: null }))
      .mockImplementationOnce(
        () =>
          new Promise(resolve => {
            release = resolve as (v: unknown) => void;
          }) as never
      )
      .mockResolvedValueOnce({ records: [rec(5, 'job.create')], next_before: null });
    const model = new ShipyardModel(c);
    await model.refreshProfile();
    const slow = model.loadAudit({ user: '', action: 'server', since: '' });
    await model.loadAudit({ user: '', action: 'job', since: '' });
    release({ records: [rec(9, 'server.start')], next_before: null });
    await slow;
    expect(model.state.audit.records.map(r => r.action)).toEqual(['job.create']);
    expect(model.state.audit.filters.action).toBe('job');
  });

  it('keeps a refused filter’s message in the section, and hides it on the service’s 403', async () => {
    const c = adminClients(true);
    const model = new ShipyardModel(c);
    await model.refreshProfile();
    c.audit.records.mockRejectedValueOnce(
      new ShipyardAPIError("action='nonsense' is not an audited action", 400)
    );
    await model.loadAudit({ user: '', action: 'nonsense', since: '' });
    expect(model.state.audit).toMatchObject({
      status: 'error',
      errorStatus: 400,
      error: "action='nonsense' is not an audited action"
    });
    c.audit.records.mockRejectedValueOnce(
      new ShipyardAPIError('The audit trail is for hub admins.', 403)
    );
    await model.loadAudit();
    expect(model.state.audit).toMatchObject({ forbidden: true, records: [] });
    await model.refresh(true);
    await model.verifyAudit();
    expect(c.audit.records).toHaveBeenCalledTimes(3);
    expect(c.audit.verify).not.toHaveBeenCalled();
  });

  it('verifies the trail and keeps the verdict, or why it could not', async () => {
    const c = adminClients(true);
    const model = new ShipyardModel(c);
    await model.refreshProfile();
    await model.verifyAudit();
    expect(model.state.audit.verify).toMatchObject({ status: 'done', result: { ok: true } });
    c.audit.verify.mockRejectedValueOnce(
      new ShipyardAPIError('Cannot reach the audit service', 502)
    );
    await model.verifyAudit();
    expect(model.state.audit.verify).toEqual({
      status: 'error',
      result: null,
      error: 'Cannot reach the audit service'
    });
  });

  it('forgets the records when the user is no longer an admin', async () => {
    const c = adminClients(true);
    c.audit.records.mockResolvedValue({ records: [rec(1)], next_before: null });
    const model = new ShipyardModel(c);
    await model.refreshProfile();
    expect(model.state.audit.records).toHaveLength(1);
    c.server.profile.mockResolvedValue({ user: 'root', admin: false } as never);
    await model.refreshProfile();
    expect(model.state.audit).toMatchObject({ admin: false, records: [], status: 'idle' });
  });
});
