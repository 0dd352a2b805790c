/**
 * The panel's state: the five sections (profile, experiments, jobs, pipelines,
 * deployments), refreshed from the services, and the actions on them, plus the Audit
 * section for hub admins. The React views render it; the widget
 * decides when to refresh (polling while visible).
 *
 * Each section loads on its own: one service being down shows its message in its
 * section and leaves the others alone. Errors of a refresh are kept in the state and
 * shown inline (a notification every five seconds would bury the user); errors of an
 * action (run now, pause, roll back) are thrown to the caller, which notifies.
 *
 * The Pipelines section keeps its actions' errors (run, repair, cancel, pause) in its state, shown
 * in the section in the service's words; each refresh asks for the selected run again only
 * while it runs (or on a forced refresh), and for the selected pipeline's list of runs.
 *
 * The Usage section (../logic/usage.ts) is not polled every 5 s either: usage is counted by
 * the hour, so it loads with the first refresh, again when older than five minutes, and on
 * a forced refresh; the platform's part only for admins. Its errors stay in its state.
 *
 * The Alerts section (../logic/alerts.ts) loads with the first refresh and again when older
 * than 30 s (the alerts service evaluates its rules every 30 s), and on a forced refresh:
 * the open alerts and, apart, the resolved ones, so many resolved never hide a firing one.
 * Its errors stay in its state. The user's own notification targets (../logic/targets.ts)
 * load with its first refresh and on a forced one, never with the poll; saving one keeps the
 * service's refusal in the state, shown next to the field.
 *
 * The Audit section (../logic/audit.ts) is not polled: it loads when the profile first says
 * the user is an admin, on a forced refresh, and on the section's own buttons, and keeps
 * its errors, verification included, in its state.
 */
import { ISignal, Signal } from '@lumino/signaling';

import type { AlertsService } from '../api/alerts';
import type { AuditService } from '../api/audit';
import type { DeployerService } from '../api/deployer';
import { ShipyardAPIError, errorMessage } from '../api/request';
import type { SchedulerService } from '../api/scheduler';
import type { ShipyardServerService } from '../api/server';
import type { UsageService } from '../api/usage';
import type {
  IDeployment,
  IDeploymentMetrics,
  IExperiments,
  IJob,
  IPipeline,
  IPipelineRun,
  IRun,
  IServerProfile,
  JSONValue
} from '../api/types';
import {
  alertsDue,
  IAlertsState,
  INITIAL_ALERTS,
  OPEN_LIMIT,
  recentResolved,
  RESOLVED_LIMIT,
  sortOpen
} from '../logic/alerts';
import {
  auditQuery,
  auditVisible,
  IAuditFilters,
  IAuditState,
  INITIAL_AUDIT,
  startLoad,
  startVerify,
  withLoadError,
  withPage,
  withVerify,
  withVerifyError
} from '../logic/audit';
import { isRunActive } from '../logic/pipelines';
import {
  History,
  IJobRow,
  jobRows,
  latestRunByJob,
  pruneHistory,
  pushSample
} from '../logic/state';
import {
  INITIAL_TARGETS,
  ITargetsState,
  refusalText,
  settled,
  targetsDue,
  withTargets
} from '../logic/targets';
import {
  INITIAL_USAGE,
  IUsageState,
  UsageMetric,
  usageDue,
  usageSince,
  usedRows
} from '../logic/usage';

/** A section's data and how its last refresh went. */
export interface ISection<T> {
  /** ``loading`` before the first answer; ``unavailable``: the feature is not set up. */
  status: 'loading' | 'ok' | 'error' | 'unavailable';
  data: T | null;
  /** The message of the last refresh's error (or of ``unavailable``). */
  error: string | null;
  /** When the data was last refreshed (ms since the epoch). */
  updated: number | null;
}

/** A deployment with its latest metrics (or why there are none). */
export interface IDeploymentState {
  deployment: IDeployment;
  metrics: IDeploymentMetrics | null;
  metricsError: string | null;
}

/**
 * The Pipelines section: the user's pipelines; the runs of the one selected; the run
 * selected, with every step's state (polled with the panel while it runs).
 */
export interface IPipelinesState {
  list: ISection<IPipeline[]>;
  /** The id of the pipeline whose runs are shown. */
  selected: string | null;
  runs: ISection<IPipelineRun[]>;
  /** The id of the run shown as a graph. */
  run: string | null;
  detail: ISection<IPipelineRun>;
  /** Why the last action (run, repair, cancel, pause) failed, as the service said it. */
  actionError: string | null;
}

export interface IPanelState {
  profile: ISection<IServerProfile>;
  experiments: ISection<IExperiments>;
  jobs: ISection<IJobRow[]>;
  deployments: ISection<IDeploymentState[]>;
  pipelines: IPipelinesState;
  history: History;
  audit: IAuditState;
  usage: IUsageState;
  alerts: IAlertsState;
  /** Where the user is told about their alerts (the Alerts section's form). */
  alertTargets: ITargetsState;
}

export interface IShipyardClients {
  server: ShipyardServerService;
  scheduler: SchedulerService;
  deployer: DeployerService;
  audit: AuditService;
  usage: UsageService;
  alerts: AlertsService;
}

function empty<T>(): ISection<T> {
  return { status: 'loading', data: null, error: null, updated: null };
}

/** How many of the newest runs one request lists to find each job's latest. */
const RUNS_PAGE = 200;
/** Experiments come from MLflow: refreshed at most this often unless asked. */
const EXPERIMENTS_EVERY_MS = 30_000;

export class ShipyardModel {
  constructor(readonly clients: IShipyardClients) {}

  /** Emitted whenever the state changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get state(): IPanelState {
    return this._state;
  }

  /**
   * Refresh every section (experiments at most every 30 s unless ``force``).
   *
   * Never rejects: each section's error is kept in its state.
   */
  async refresh(force = false): Promise<void> {
    const experiments = this._state.experiments.updated;
    const due = force || experiments === null || Date.now() - experiments >= EXPERIMENTS_EVERY_MS;
    const audit = this._state.audit;
    await Promise.all([
      this.refreshProfile(),
      due ? this.refreshExperiments() : Promise.resolve(),
      this.refreshJobs(),
      this.refreshPipelines(force),
      this.refreshDeployments(),
      alertsDue(this._state.alerts, Date.now(), force) ? this.loadAlerts() : Promise.resolve(),
      targetsDue(this._state.alertTargets, force) ? this.loadTargets() : Promise.resolve(),
      // asked for by the user: the records again (the poll never reads the trail)
      force && auditVisible(audit) && audit.status !== 'idle'
        ? this.loadAudit(audit.filters)
        : Promise.resolve()
    ]);
    // after the profile: whether the platform's part is asked for depends on it
    if (usageDue(this._state.usage, Date.now(), force)) {
      await this.loadUsage();
    }
  }

  // -------------------------------------------------------------- alerts

  /**
   * The user's alerts (an admin's: everyone's): the open ones, firing first, and those
   * resolved in the last week. Never rejects: the error stays in the section, above what
   * it showed.
   */
  async loadAlerts(): Promise<void> {
    const ticket = ++this._alertsTicket;
    this._setAlerts({ ...this._state.alerts, status: 'loading' });
    const alerts = this.clients.alerts;
    try {
      const [open, resolved] = await Promise.all([
        alerts.list({ limit: OPEN_LIMIT }),
        alerts.list({ state: 'resolved', limit: RESOLVED_LIMIT })
      ]);
      if (ticket === this._alertsTicket) {
        const now = Date.now();
        this._setAlerts({
          status: 'ok',
          open: sortOpen(open.alerts),
          resolved: recentResolved(resolved.alerts, now),
          error: null,
          updated: now
        });
      }
    } catch (error) {
      if (ticket === this._alertsTicket) {
        this._setAlerts({
          ...this._state.alerts,
          status: 'error',
          error: errorMessage(error),
          updated: Date.now()
        });
      }
    }
  }

  /**
   * The user's notification targets (redacted) and the schemes allowed. Never rejects: the
   * error stays in the section.
   */
  async loadTargets(): Promise<void> {
    const ticket = ++this._targetsTicket;
    this._setTargets({ ...this._state.alertTargets, status: 'loading' });
    try {
      const answer = await this.clients.alerts.targets();
      if (ticket === this._targetsTicket) {
        this._setTargets(withTargets(this._state.alertTargets, answer));
      }
    } catch (error) {
      if (ticket === this._targetsTicket) {
        this._setTargets({
          ...this._state.alertTargets,
          status: 'error',
          error: errorMessage(error)
        });
      }
    }
  }

  /**
   * Replace the user's targets with ``urls`` (apprise URLs; an empty list removes them all).
   * Resolves true when the service took them, false when it refused one: its message, with
   * the refused URL's number, stays in the state. Never rejects.
   */
  async saveTargets(urls: string[]): Promise<boolean> {
    if (this._state.alertTargets.saving) {
      return false;
    }
    // a load on its way answers what the save replaces: drop it
    const ticket = ++this._targetsTicket;
    this._setTargets({ ...this._state.alertTargets, saving: true, saveError: null });
    try {
      const answer = await this.clients.alerts.setTargets(urls);
      const saved = this._state.alertTargets.saved + 1;
      this._setTargets({ ...withTargets(this._state.alertTargets, answer), saving: false, saved });
      return true;
    } catch (error) {
      const state = this._state.alertTargets;
      this._setTargets({
        ...state,
        status: ticket === this._targetsTicket ? settled(state) : state.status,
        saving: false,
        saveError: refusalText(errorMessage(error))
      });
      return false;
    }
  }

  // -------------------------------------------------------------- usage

  /**
   * The user's usage over the last 30 days (a series a day, by kind, by profile) and, for an
   * admin, the platform's (by user, by profile, the waste report). Never rejects: the
   * errors stay in the section; the platform's failing leaves the user's own shown.
   */
  async loadUsage(): Promise<void> {
    const ticket = ++this._usageTicket;
    const now = Date.now();
    this._setUsage({ ...this._state.usage, status: 'loading' });
    const since = usageSince(now);
    const usage = this.clients.usage;
    // an admin's report without ``user`` is everyone's: name the owner for their own
    const own = usage.owner ? { user: usage.owner } : {};
    const admin = this._state.profile.data?.admin === true;
    const platform = admin
      ? Promise.all([
          usage.report({ by: 'user', since }),
          usage.report({ by: 'profile', since }),
          usage.waste()
        ]).then(
          ([byUser, byProfile, waste]) => ({
            data: {
              currency: byUser.currency,
              byUser: usedRows(byUser),
              byProfile: usedRows(byProfile),
              waste
            },
            error: null
          }),
          (error: unknown) => ({ data: null, error: errorMessage(error) })
        )
      : Promise.resolve({ data: null, error: null });
    try {
      const [days, byKind, byProfile] = await Promise.all([
        usage.report({ by: 'day', since, ...own }),
        usage.report({ by: 'kind', since, ...own }),
        usage.report({ by: 'profile', since, ...own })
      ]);
      const everyone = await platform;
      if (ticket === this._usageTicket) {
        this._setUsage({
          ...this._state.usage,
          status: 'ok',
          mine: {
            currency: days.currency,
            days: days.rows,
            byKind: usedRows(byKind),
            byProfile: usedRows(byProfile)
          },
          platform: everyone.data,
          platformError: everyone.error,
          error: null,
          updated: Date.now()
        });
      }
    } catch (error) {
      await platform.catch(() => undefined);
      if (ticket === this._usageTicket) {
        // keep what was shown, with the error above it
        this._setUsage({
          ...this._state.usage,
          status: 'error',
          error: errorMessage(error),
          updated: Date.now()
        });
      }
    }
  }

  /** Plot ``metric`` in the Usage section. */
  setUsageMetric(metric: UsageMetric): void {
    this._setUsage({ ...this._state.usage, metric });
  }

  async refreshProfile(): Promise<void> {
    await this._load('profile', () => this.clients.server.profile());
    const profile = this._state.profile;
    if (profile.status !== 'ok' || !profile.data) {
      return; // keep what was known
    }
    const admin = profile.data.admin === true;
    if (admin !== this._state.audit.admin) {
      // no longer an admin: nothing of the trail stays in the page
      const forbidden = this._state.audit.forbidden;
      this._setAudit(admin ? { ...this._state.audit, admin } : { ...INITIAL_AUDIT, forbidden });
    }
    if (auditVisible(this._state.audit) && this._state.audit.status === 'idle') {
      await this.loadAudit(this._state.audit.filters);
    }
  }

  // -------------------------------------------------------------- audit (admins)

  /**
   * The newest records matching ``filters`` (the first page). Never rejects: an error is
   * kept in the section, and the service's 403 hides it.
   */
  async loadAudit(filters: IAuditFilters = this._state.audit.filters): Promise<void> {
    if (!auditVisible(this._state.audit)) {
      return;
    }
    const ticket = ++this._auditTicket;
    this._setAudit(startLoad(this._state.audit, filters));
    const query = auditQuery(this._state.audit.filters);
    try {
      const page = await this.clients.audit.records(query);
      if (ticket === this._auditTicket) {
        this._setAudit(withPage(this._state.audit, page, false, Date.now()));
      }
    } catch (error) {
      if (ticket === this._auditTicket) {
        this._setAudit(
          withLoadError(this._state.audit, errorMessage(error), statusOf(error), Date.now())
        );
      }
    }
  }

  /** The next (older) page of the records shown; nothing when there is none. */
  async loadMoreAudit(): Promise<void> {
    const audit = this._state.audit;
    if (!auditVisible(audit) || audit.nextBefore === null || audit.loadingMore) {
      return;
    }
    const ticket = this._auditTicket;
    this._setAudit({ ...audit, loadingMore: true });
    try {
      const page = await this.clients.audit.records(auditQuery(audit.filters, audit.nextBefore));
      if (ticket === this._auditTicket) {
        this._setAudit(withPage(this._state.audit, page, true, Date.now()));
      }
    } catch (error) {
      if (ticket === this._auditTicket) {
        this._setAudit(
          withLoadError(this._state.audit, errorMessage(error), statusOf(error), Date.now())
        );
      }
    }
  }

  /** Check the trail's hash chain; the result (or why it could not run) stays in the state. */
  async verifyAudit(): Promise<void> {
    if (!auditVisible(this._state.audit) || this._state.audit.verify.status === 'running') {
      return;
    }
    this._setAudit(startVerify(this._state.audit));
    try {
      const result = await this.clients.audit.verify();
      this._setAudit(withVerify(this._state.audit, result));
    } catch (error) {
      this._setAudit(withVerifyError(this._state.audit, errorMessage(error), statusOf(error)));
    }
  }

  async refreshExperiments(): Promise<void> {
    await this._load(
      'experiments',
      () => this.clients.server.experiments(20),
      error =>
        // not configured: the section's empty state says so, it is not a failure
        error instanceof ShipyardAPIError && (error.status === 404 || error.status === 503)
    );
  }

  async refreshJobs(): Promise<void> {
    await this._load('jobs', async () => {
      const [jobs, runs] = await Promise.all([
        this.clients.scheduler.listJobs(),
        this.clients.scheduler.listRuns({ limit: RUNS_PAGE })
      ]);
      const latest = latestRunByJob(runs);
      if (runs.length >= RUNS_PAGE) {
        // the page did not reach every job's runs: ask for the others' newest one
        const missing = jobs.filter(j => !latest.has(j.id));
        const found = await Promise.all(
          missing.map(j =>
            this.clients.scheduler.listRuns({ jobId: j.id, limit: 1 }).catch(() => [] as IRun[])
          )
        );
        for (const run of found.flat()) {
          latest.set(run.job_id, run);
        }
      }
      return jobRows(jobs, latest);
    });
  }

  async refreshDeployments(): Promise<void> {
    await this._load('deployments', async () => {
      const deployments = await this.clients.deployer.list();
      const now = Date.now();
      const states = await Promise.all(
        deployments.map(async (deployment): Promise<IDeploymentState> => {
          try {
            const metrics = await this.clients.deployer.metrics(deployment.name);
            return { deployment, metrics, metricsError: null };
          } catch (error) {
            return { deployment, metrics: null, metricsError: errorMessage(error) };
          }
        })
      );
      let history = pruneHistory(
        this._state.history,
        states.map(s => s.deployment.name)
      );
      for (const s of states) {
        if (s.metrics) {
          history = pushSample(history, s.deployment.name, s.metrics, now);
        }
      }
      this._state = { ...this._state, history };
      return states;
    });
  }

  // -------------------------------------------------------------- pipelines

  /**
   * The pipelines; the selected one's runs; the selected run while it runs (or when
   * ``force``d, or not yet loaded): an ended run is not asked for again. Never rejects:
   * errors stay in the section.
   */
  async refreshPipelines(force = false): Promise<void> {
    await this._loadPipelines('list', () => this.clients.scheduler.listPipelines());
    const p = this._state.pipelines;
    const list = p.list.data;
    if (p.selected && list && !list.some(x => x.id === p.selected)) {
      // deleted elsewhere: nothing of it stays selected
      this._setPipelines({ ...p, selected: null, runs: empty(), run: null, detail: empty() });
      return;
    }
    if (!p.selected) {
      return;
    }
    const detail = p.detail.data;
    const polled = force || !detail || detail.id !== p.run || isRunActive(detail);
    await Promise.all([
      // a run started elsewhere (by hand or a trigger) shows up in the list
      this._refreshRuns(p.selected),
      p.run && polled ? this._refreshRun(p.run) : Promise.resolve()
    ]);
  }

  /** Show ``pipelineId``'s runs, and its newest run as a graph. */
  async selectPipeline(pipelineId: string | null): Promise<void> {
    const p = this._state.pipelines;
    if (pipelineId === p.selected) {
      return;
    }
    this._setPipelines({
      ...p,
      selected: pipelineId,
      runs: empty(),
      run: null,
      detail: empty(),
      actionError: null
    });
    if (!pipelineId) {
      return;
    }
    await this._refreshRuns(pipelineId);
    const now = this._state.pipelines;
    const newest = now.runs.data?.[0];
    if (now.selected === pipelineId && newest && now.run === null) {
      await this.selectPipelineRun(newest.id);
    }
  }

  /** Show run ``runId`` of the selected pipeline as a graph. */
  async selectPipelineRun(runId: string | null): Promise<void> {
    const p = this._state.pipelines;
    const known = p.runs.data?.find(r => r.id === runId) ?? null;
    this._setPipelines({
      ...p,
      run: runId,
      detail: known
        ? { status: 'ok', data: known, error: null, updated: Date.now() }
        : empty<IPipelineRun>(),
      actionError: null
    });
    if (runId) {
      await this._refreshRun(runId);
    }
  }

  /** Add the pipeline of ``path`` (relative to home) and select it; rejects with the 400. */
  async addPipeline(path: string): Promise<IPipeline> {
    const pipeline = await this.clients.scheduler.createPipeline(path);
    await this._loadPipelines('list', () => this.clients.scheduler.listPipelines());
    await this.selectPipeline(pipeline.id);
    return pipeline;
  }

  /** Start a run of the pipeline and show it. Never rejects: the error shows in the section. */
  async runPipeline(
    pipeline: IPipeline,
    parameters: Record<string, JSONValue> = {}
  ): Promise<IPipelineRun | null> {
    return this._pipelineAction(async () => {
      const run = await this.clients.scheduler.runPipeline(pipeline.id, parameters);
      await this._showNewRun(pipeline.id, run);
      return run;
    });
  }

  /**
   * Pause a pipeline's triggers, or resume a paused pipeline; the list shows the service's
   * answer. Never rejects: the error shows in the section.
   */
  async togglePipelinePause(pipeline: IPipeline): Promise<IPipeline | null> {
    return this._pipelineAction(async () => {
      const updated = await this.clients.scheduler.setPipelinePaused(pipeline.id, !pipeline.paused);
      const p = this._state.pipelines;
      const list = p.list.data;
      if (list) {
        this._setPipelines({
          ...p,
          list: { ...p.list, data: list.map(x => (x.id === updated.id ? updated : x)) }
        });
      }
      return updated;
    });
  }

  /** Start the repair of a failed or cancelled run, and show the new run. */
  async repairPipelineRun(run: IPipelineRun): Promise<IPipelineRun | null> {
    return this._pipelineAction(async () => {
      const repaired = await this.clients.scheduler.repairPipelineRun(run.id);
      await this._showNewRun(run.pipeline_id, repaired);
      return repaired;
    });
  }

  /** Cancel a running run. */
  async cancelPipelineRun(run: IPipelineRun): Promise<IPipelineRun | null> {
    return this._pipelineAction(async () => {
      const cancelled = await this.clients.scheduler.cancelPipelineRun(run.id);
      this._withRun(cancelled);
      void this._refreshRuns(run.pipeline_id);
      return cancelled;
    });
  }

  private async _pipelineAction<T>(work: () => Promise<T>): Promise<T | null> {
    this._setPipelines({ ...this._state.pipelines, actionError: null });
    try {
      return await work();
    } catch (error) {
      this._setPipelines({ ...this._state.pipelines, actionError: errorMessage(error) });
      return null;
    }
  }

  private async _showNewRun(pipelineId: string, run: IPipelineRun): Promise<void> {
    const p = this._state.pipelines;
    const runs = p.runs.data && p.selected === pipelineId ? p.runs.data : [];
    this._setPipelines({
      ...p,
      selected: pipelineId,
      runs: {
        status: 'ok',
        data: [run, ...runs.filter(r => r.id !== run.id)],
        error: null,
        updated: Date.now()
      },
      run: run.id,
      detail: { status: 'ok', data: run, error: null, updated: Date.now() }
    });
    await this._refreshRuns(pipelineId);
  }

  private async _refreshRuns(pipelineId: string): Promise<void> {
    await this._loadPipelines(
      'runs',
      () => this.clients.scheduler.listPipelineRuns(pipelineId),
      () => this._state.pipelines.selected === pipelineId
    );
  }

  private async _refreshRun(runId: string): Promise<void> {
    await this._loadPipelines(
      'detail',
      () => this.clients.scheduler.getPipelineRun(runId),
      () => this._state.pipelines.run === runId
    );
    const detail = this._state.pipelines.detail.data;
    if (detail && detail.id === runId) {
      this._withRun(detail);
    }
  }

  /** ``run`` in the list of runs too, where it is listed. */
  private _withRun(run: IPipelineRun): void {
    const p = this._state.pipelines;
    const runs = p.runs.data;
    this._setPipelines({
      ...p,
      detail:
        p.run === run.id ? { status: 'ok', data: run, error: null, updated: Date.now() } : p.detail,
      runs: runs ? { ...p.runs, data: runs.map(r => (r.id === run.id ? run : r)) } : p.runs
    });
  }

  /** Load one part of the Pipelines section; an answer no longer wanted (``still``) is dropped. */
  private async _loadPipelines<K extends 'list' | 'runs' | 'detail'>(
    key: K,
    fetch: () => Promise<NonNullable<IPipelinesState[K]['data']>>,
    still: () => boolean = () => true
  ): Promise<void> {
    let next: ISection<unknown>;
    try {
      const data = await fetch();
      next = { status: 'ok', data, error: null, updated: Date.now() };
    } catch (error) {
      const previous = this._state.pipelines[key] as ISection<unknown>;
      next = { ...previous, status: 'error', error: errorMessage(error), updated: Date.now() };
    }
    if (still()) {
      this._setPipelines({ ...this._state.pipelines, [key]: next });
    }
  }

  private _setPipelines(pipelines: IPipelinesState): void {
    this._state = { ...this._state, pipelines };
    this._changed.emit();
  }

  // -------------------------------------------------------------- actions

  /** Queue a run of ``job`` now; rejects with the service's message. */
  async runNow(job: IJob): Promise<IRun> {
    const run = await this.clients.scheduler.runNow(job.id);
    void this.refreshJobs();
    return run;
  }

  /** Pause a running job or resume a paused one; rejects with the service's message. */
  async togglePause(job: IJob): Promise<IJob> {
    const updated = await this.clients.scheduler.updateJob(job.id, { paused: !job.paused });
    await this.refreshJobs();
    return updated;
  }

  /** Send all of ``name``'s traffic back; rejects with the service's message. */
  async rollback(name: string, version?: number): Promise<IDeployment> {
    const deployment = await this.clients.deployer.rollback(name, version);
    await this.refreshDeployments();
    return deployment;
  }

  // -------------------------------------------------------------- internals

  private async _load<K extends 'profile' | 'experiments' | 'jobs' | 'deployments'>(
    key: K,
    fetch: () => Promise<NonNullable<IPanelState[K]['data']>>,
    unavailable: (error: unknown) => boolean = () => false
  ): Promise<void> {
    let next: ISection<unknown>;
    try {
      const data = await fetch();
      next = { status: 'ok', data, error: null, updated: Date.now() };
    } catch (error) {
      const previous = this._state[key] as ISection<unknown>;
      next = unavailable(error)
        ? { status: 'unavailable', data: null, error: errorMessage(error), updated: Date.now() }
        : // keep what was shown, with the error above it
          { ...previous, status: 'error', error: errorMessage(error), updated: Date.now() };
    }
    this._state = { ...this._state, [key]: next };
    this._changed.emit();
  }

  private _setAlerts(alerts: IAlertsState): void {
    this._state = { ...this._state, alerts };
    this._changed.emit();
  }

  private _setTargets(alertTargets: ITargetsState): void {
    this._state = { ...this._state, alertTargets };
    this._changed.emit();
  }

  private _setUsage(usage: IUsageState): void {
    this._state = { ...this._state, usage };
    this._changed.emit();
  }

  private _setAudit(audit: IAuditState): void {
    this._state = { ...this._state, audit };
    this._changed.emit();
  }

  private _state: IPanelState = {
    profile: empty(),
    experiments: empty(),
    jobs: empty(),
    deployments: empty(),
    pipelines: {
      list: empty(),
      selected: null,
      runs: empty(),
      run: null,
      detail: empty(),
      actionError: null
    },
    history: {},
    audit: INITIAL_AUDIT,
    usage: INITIAL_USAGE,
    alerts: INITIAL_ALERTS,
    alertTargets: INITIAL_TARGETS
  };
  /** Bumped by each alerts load: answers of an older one are dropped. */
  private _alertsTicket = 0;
  /** Bumped by each targets load and save: answers of an older one are dropped. */
  private _targetsTicket = 0;
  /** Bumped by each usage load: answers of an older one are dropped. */
  private _usageTicket = 0;
  /** Bumped by each first-page load: answers of an older one are dropped. */
  private _auditTicket = 0;
  private _changed = new Signal<this, void>(this);
}

/** The HTTP status of an error (0 when the server was not reached or it is not an API error). */
function statusOf(error: unknown): number {
  return error instanceof ShipyardAPIError ? error.status : 0;
}
