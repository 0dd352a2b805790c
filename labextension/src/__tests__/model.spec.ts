/**
 * The panel's model with fake clients: sections load on their own, errors stay in their
 * section, tracking that is not set up is an empty state, and actions refresh.
 */
import { describe, expect, it, vi } from 'vitest';

import { ShipyardAPIError } from '../api/request';
import type { IDeployment, IJob, IRun } from '../api/types';
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
