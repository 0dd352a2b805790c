/**
 * The panel's model with fake clients: sections load on their own, errors stay in their
 * section, tracking that is not set up is an empty state, and actions refresh.
 */
import { describe, expect, it, vi } from 'vitest';

import { ShipyardAPIError } from '../api/request';
import type {
  IAlert,
  IAuditRecord,
  IDeployment,
  IJob,
  IPipeline,
  IPipelineRun,
  IRun
} from '../api/types';
import { AUDIT_PAGE } from '../logic/audit';
import { IShipyardClients, ShipyardModel } from '../panel/model';

const job = (id: string, name: string, paused = false) =>
  ({ id, name, owner: 'alice', paused, triggers: [], read_only: false }) as unknown as IJob;
const run = (id: string, jobId: string, queued: string) =>
  ({ id, job_id: jobId, status: 'succeeded', queued_at: queued }) as unknown as IRun;
const deployment = (name: string, traffic: Record<string, number>) =>
  ({ name, owner: 'alice', traffic, versions: [], previous_version: 1 }) as unknown as IDeployment;

const pipeline = (id: string, name: string) =>
  ({ id, name, parameters: {}, steps: [] }) as unknown as IPipeline;
const pipelineRun = (id: string, status: IPipelineRun['status'], pipelineId = 'p1') =>
  ({
    id,
    pipeline_id: pipelineId,
    pipeline_name: 'churn',
    status,
    steps: []
  }) as unknown as IPipelineRun;

const alert = (id: string, state: IAlert['state'], at: string): IAlert => ({
  id,
  key: `job_failed{job=${id}}`,
  rule: 'job_failed',
  owner: 'alice',
  labels: { job: id },
  severity: 'warning',
  summary: `Job alice/${id} failed.`,
  value: null,
  state,
  pending_since: at,
  started_at: state === 'pending' ? null : at,
  resolved_at: state === 'resolved' ? at : null
});

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
      })),
      listPipelines: vi.fn(async () => [pipeline('p1', 'churn')]),
      listPipelineRuns: vi.fn(async (_id: string) => [
        pipelineRun('pr2', 'running'),
        pipelineRun('pr1', 'failed')
      ]),
      getPipelineRun: vi.fn(async (id: string) => pipelineRun(id, 'running')),
      runPipeline: vi.fn(async (_id: string, _parameters: Record<string, unknown>) =>
        pipelineRun('pr3', 'running')
      ),
      repairPipelineRun: vi.fn(async (_id: string) => pipelineRun('pr4', 'running')),
      cancelPipelineRun: vi.fn(async (id: string) => pipelineRun(id, 'cancelled')),
      createPipeline: vi.fn(async (_path: string) => pipeline('p2', 'new')),
      setPipelinePaused: vi.fn(async (id: string, paused: boolean) => ({
        ...pipeline(id, 'churn'),
        paused
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
    usage: {
      owner: 'alice',
      report: vi.fn(async (query: { by?: string; user?: string } = {}) => ({
        by: query.by ?? 'user',
        since: 0,
        until: 1,
        currency: 'EUR',
        rows: [
          {
            key: query.by === 'day' ? '2026-12-07' : (query.user ?? 'everyone'),
            cpu_seconds: 3600,
            cpu_hours: 1,
            mem_gib_hours: 0,
            gpu_hours: 0,
            wall_hours: 1,
            cost: 0.5
          }
        ]
      })),
      waste: vi.fn(async () => ({ days: 7, idle: [], rightsizing: [] }))
    },
    alerts: {
      list: vi.fn(async (query: { state?: string } = {}) => ({
        alerts:
          query.state === 'resolved'
            ? [alert('r1', 'resolved', new Date(Date.now() - 3_600_000).toISOString())]
            : [
                alert('p1', 'pending', new Date(Date.now() - 60_000).toISOString()),
                alert('f1', 'firing', new Date(Date.now() - 120_000).toISOString())
              ]
      })),
      get: vi.fn(),
      targets: vi.fn(async () => ({
        targets: ['slack://…'],
        updated_at: '2026-12-07T12:00:00Z' as string | null,
        schemes: ['json', 'jsons', 'slack']
      })),
      setTargets: vi.fn(async (urls: string[]) => ({
        targets: urls.map(u => `${u.split('://')[0]}://…`),
        updated_at: '2026-12-07T13:00:00Z' as string | null,
        schemes: ['json', 'jsons', 'slack']
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
    expect(s.pipelines.list.data?.map(p => p.name)).toEqual(['churn']);
    // five sections, and the usage and alerts sections' and the targets' loading and answer each
    expect(changes).toHaveBeenCalledTimes(11);
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

describe('ShipyardModel: pipelines', () => {
  it('selects a pipeline and its newest run, and polls that run only while it runs', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    await model.selectPipeline('p1');
    let p = model.state.pipelines;
    expect(p.selected).toBe('p1');
    expect(p.runs.data?.map(r => r.id)).toEqual(['pr2', 'pr1']);
    expect(p.run).toBe('pr2');
    expect(p.detail.data?.status).toBe('running');
    expect(c.scheduler.getPipelineRun).toHaveBeenCalledTimes(1);

    await model.refresh(); // running: asked again
    expect(c.scheduler.getPipelineRun).toHaveBeenCalledTimes(2);

    c.scheduler.getPipelineRun.mockImplementation(async (id: string) =>
      pipelineRun(id, 'succeeded')
    );
    c.scheduler.listPipelineRuns.mockImplementation(async () => [
      pipelineRun('pr2', 'succeeded'),
      pipelineRun('pr1', 'failed')
    ]);
    await model.refresh(); // it ends here
    p = model.state.pipelines;
    expect(p.detail.data?.status).toBe('succeeded');
    expect(p.runs.data?.[0].status).toBe('succeeded');
    await model.refresh(); // ended: not asked again
    await model.refresh();
    expect(c.scheduler.getPipelineRun).toHaveBeenCalledTimes(3);
    await model.refresh(true); // unless the user asks
    expect(c.scheduler.getPipelineRun).toHaveBeenCalledTimes(4);
  });

  it('shows a run it starts, a repair it starts, and a run it cancels', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    const started = await model.runPipeline(pipeline('p1', 'churn'), { rows: 10 });
    expect(c.scheduler.runPipeline).toHaveBeenCalledWith('p1', { rows: 10 });
    expect(started?.id).toBe('pr3');
    expect(model.state.pipelines).toMatchObject({ selected: 'p1', run: 'pr3' });

    const repaired = await model.repairPipelineRun(pipelineRun('pr1', 'failed'));
    expect(c.scheduler.repairPipelineRun).toHaveBeenCalledWith('pr1');
    expect(repaired?.id).toBe('pr4');
    expect(model.state.pipelines.run).toBe('pr4');

    await model.selectPipelineRun('pr2');
    await model.cancelPipelineRun(pipelineRun('pr2', 'running'));
    expect(c.scheduler.cancelPipelineRun).toHaveBeenCalledWith('pr2');
    expect(model.state.pipelines.detail.data?.status).toBe('cancelled');
  });

  it("keeps an action's refusal in the section, in the service's words", async () => {
    const c = clients();
    c.scheduler.runPipeline.mockRejectedValue(
      new ShipyardAPIError('churn already has a run going: wait for it or cancel it', 409)
    );
    const model = new ShipyardModel(c);
    await model.selectPipeline('p1');
    expect(await model.runPipeline(pipeline('p1', 'churn'))).toBeNull();
    expect(model.state.pipelines.actionError).toBe(
      'churn already has a run going: wait for it or cancel it'
    );
    // the next action starts without it
    await model.cancelPipelineRun(pipelineRun('pr2', 'running'));
    expect(model.state.pipelines.actionError).toBeNull();
  });

  it('shows the error of a list that fails, and forgets a pipeline deleted elsewhere', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    await model.selectPipeline('p1');
    c.scheduler.listPipelines.mockRejectedValueOnce(new ShipyardAPIError('scheduler down', 502));
    await model.refresh();
    expect(model.state.pipelines.list).toMatchObject({ status: 'error', error: 'scheduler down' });
    expect(model.state.pipelines.list.data?.length).toBe(1); // what was shown stays
    c.scheduler.listPipelines.mockResolvedValue([]);
    await model.refresh();
    expect(model.state.pipelines).toMatchObject({ selected: null, run: null });
  });

  it('pauses and resumes a pipeline, showing the answer in the list', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    const paused = await model.togglePipelinePause(pipeline('p1', 'churn'));
    expect(c.scheduler.setPipelinePaused).toHaveBeenLastCalledWith('p1', true);
    expect(paused?.paused).toBe(true);
    expect(model.state.pipelines.list.data?.[0].paused).toBe(true);
    await model.togglePipelinePause(model.state.pipelines.list.data![0]);
    expect(c.scheduler.setPipelinePaused).toHaveBeenLastCalledWith('p1', false);
    expect(model.state.pipelines.list.data?.[0].paused).toBe(false);
    // a refusal stays in the section and changes nothing
    c.scheduler.setPipelinePaused.mockRejectedValueOnce(
      new ShipyardAPIError('Only alice can pause churn', 403)
    );
    expect(await model.togglePipelinePause(pipeline('p1', 'churn'))).toBeNull();
    expect(model.state.pipelines.actionError).toBe('Only alice can pause churn');
    expect(model.state.pipelines.list.data?.[0].paused).toBe(false);
  });

  it('adds a pipeline and selects it; a refusal rejects with the message', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    const added = await model.addPipeline('new/pipeline.yaml');
    expect(c.scheduler.createPipeline).toHaveBeenCalledWith('new/pipeline.yaml');
    expect(added.id).toBe('p2');
    expect(model.state.pipelines.selected).toBe('p2');
    c.scheduler.createPipeline.mockRejectedValue(
      new ShipyardAPIError('bad/pipeline.yaml:4:5: nope is not a step', 400)
    );
    await expect(model.addPipeline('bad/pipeline.yaml')).rejects.toThrow('4:5: nope');
  });

  it("loads the user's usage once, not on every poll; the platform's only for admins", async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    const usage = model.state.usage;
    expect(usage.status).toBe('ok');
    expect(usage.mine?.days.map(d => d.key)).toEqual(['2026-12-07']);
    expect(usage.mine?.byKind.map(r => r.key)).toEqual(['alice']);
    expect(usage.platform).toBeNull();
    const asked = c.usage.report.mock.calls.map(([q]) => q);
    expect(asked.map(q => q?.by).sort()).toEqual(['day', 'kind', 'profile']);
    // the owner named: an admin's query without a user would be everyone's
    expect(asked.every(q => q?.user === 'alice')).toBe(true);
    expect(c.usage.waste).not.toHaveBeenCalled();

    await model.refresh();
    expect(c.usage.report).toHaveBeenCalledTimes(3);
    await model.refresh(true);
    expect(c.usage.report).toHaveBeenCalledTimes(6);
  });

  it("shows an admin the platform's usage, and its failure apart from the user's own", async () => {
    const admin = clients({
      server: {
        profile: vi.fn(async () => ({ user: 'ursula', admin: true })),
        experiments: vi.fn(async () => ({ tracking_ui: null, runs: [] }))
      }
    });
    const model = new ShipyardModel(admin);
    await model.refresh();
    const platform = model.state.usage.platform;
    expect(platform?.byUser.map(r => r.key)).toEqual(['everyone']);
    expect(platform?.waste).toEqual({ days: 7, idle: [], rightsizing: [] });
    expect(admin.usage.waste).toHaveBeenCalledTimes(1);

    admin.usage.waste.mockRejectedValueOnce(new ShipyardAPIError('usage service down', 502));
    await model.refresh(true);
    expect(model.state.usage.status).toBe('ok');
    expect(model.state.usage.platform).toBeNull();
    expect(model.state.usage.platformError).toContain('usage service down');

    admin.usage.report.mockRejectedValue(new ShipyardAPIError('not running', 502));
    await model.refresh(true);
    expect(model.state.usage.status).toBe('error');
    expect(model.state.usage.error).toContain('not running');
    expect(model.state.usage.mine?.days).toHaveLength(1);
  });

  it('loads the alerts every 30 s, not on every poll: open ones firing first, resolved apart', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    const alerts = model.state.alerts;
    expect(alerts.status).toBe('ok');
    expect(alerts.open.map(a => a.id)).toEqual(['f1', 'p1']);
    expect(alerts.resolved.map(a => a.id)).toEqual(['r1']);
    // two lists: many resolved alerts never push a firing one out of the page
    expect(c.alerts.list.mock.calls.map(([q]) => q)).toEqual([
      { limit: 100 },
      { state: 'resolved', limit: 50 }
    ]);
    await model.refresh();
    expect(c.alerts.list).toHaveBeenCalledTimes(2);
    await model.refresh(true);
    expect(c.alerts.list).toHaveBeenCalledTimes(4);

    c.alerts.list.mockRejectedValue(new ShipyardAPIError('Cannot reach the alerts service', 502));
    await model.refresh(true);
    expect(model.state.alerts.status).toBe('error');
    expect(model.state.alerts.error).toContain('Cannot reach the alerts service');
    // what it showed stays under the error
    expect(model.state.alerts.open.map(a => a.id)).toEqual(['f1', 'p1']);
    // the other sections are not touched by it
    expect(model.state.jobs.status).toBe('ok');
  });

  it('loads the targets once and on a forced refresh, never with the poll', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    expect(model.state.alertTargets).toMatchObject({
      status: 'ok',
      targets: ['slack://…'],
      schemes: ['json', 'jsons', 'slack'],
      updatedAt: '2026-12-07T12:00:00Z',
      saved: 0
    });
    await model.refresh();
    expect(c.alerts.targets).toHaveBeenCalledTimes(1);
    await model.refresh(true);
    expect(c.alerts.targets).toHaveBeenCalledTimes(2);

    c.alerts.targets.mockRejectedValueOnce(
      new ShipyardAPIError('Cannot reach the alerts service', 502)
    );
    await model.refresh(true);
    expect(model.state.alertTargets.status).toBe('error');
    expect(model.state.alertTargets.error).toContain('Cannot reach the alerts service');
    // what it showed stays under the error
    expect(model.state.alertTargets.targets).toEqual(['slack://…']);
    expect(model.state.alerts.status).toBe('ok');
  });

  it('saves targets, shows the answer, and keeps a refusal in the service’s words', async () => {
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    expect(await model.saveTargets(['json://hooks.example.org/a', 'slack://T/B/C'])).toBe(true);
    expect(c.alerts.setTargets).toHaveBeenLastCalledWith([
      'json://hooks.example.org/a',
      'slack://T/B/C'
    ]);
    expect(model.state.alertTargets).toMatchObject({
      status: 'ok',
      targets: ['json://…', 'slack://…'],
      updatedAt: '2026-12-07T13:00:00Z',
      saving: false,
      saveError: null,
      saved: 1
    });

    c.alerts.setTargets.mockRejectedValueOnce(
      new ShipyardAPIError("urls.1: the scheme 'ftp' is not one users may use here", 400)
    );
    expect(await model.saveTargets(['json://hooks.example.org/a', 'ftp://x'])).toBe(false);
    expect(model.state.alertTargets).toMatchObject({
      status: 'ok',
      targets: ['json://…', 'slack://…'],
      saving: false,
      saveError: "URL 2: the scheme 'ftp' is not one users may use here",
      saved: 1
    });

    // the next save clears the refusal; an empty list removes every target
    expect(await model.saveTargets([])).toBe(true);
    expect(model.state.alertTargets).toMatchObject({ targets: [], saveError: null, saved: 2 });
  });

  it('drops a load a save overtook, and keeps what was shown after a refused save', async () => {
    let answer: (value: unknown) => void = () => undefined;
    const c = clients();
    const model = new ShipyardModel(c);
    await model.refresh();
    c.alerts.targets.mockImplementationOnce(
      () => new Promise(resolve => (answer = resolve)) as never
    );
    const load = model.loadTargets();
    c.alerts.setTargets.mockRejectedValueOnce(new ShipyardAPIError('urls.0: refused', 400));
    expect(await model.saveTargets(['nope://x'])).toBe(false);
    answer({ targets: ['mailto://old/…'], updated_at: null, schemes: ['json'] });
    await load;
    // the overtaken answer is not shown; what was shown stays, with the refusal
    expect(model.state.alertTargets).toMatchObject({
      status: 'ok',
      targets: ['slack://…'],
      saveError: 'URL 1: refused'
    });
  });
});
