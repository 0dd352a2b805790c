/**
 * The panel's state: the four sections, refreshed from the services, and the actions on
 * them, plus the Audit section for hub admins. The React views render it; the widget
 * decides when to refresh (polling while visible).
 *
 * Each section loads on its own: one service being down shows its message in its
 * section and leaves the others alone. Errors of a refresh are kept in the state and
 * shown inline (a notification every five seconds would bury the user); errors of an
 * action (run now, pause, roll back) are thrown to the caller, which notifies.
 *
 * The Audit section (../logic/audit.ts) is not polled: it loads when the profile first says
 * the user is an admin, on a forced refresh, and on the section's own buttons, and keeps
 * its errors, verification included, in its state.
 */
import { ISignal, Signal } from '@lumino/signaling';

import type { AuditService } from '../api/audit';
import type { DeployerService } from '../api/deployer';
import { ShipyardAPIError, errorMessage } from '../api/request';
import type { SchedulerService } from '../api/scheduler';
import type { ShipyardServerService } from '../api/server';
import type {
  IDeployment,
  IDeploymentMetrics,
  IExperiments,
  IJob,
  IRun,
  IServerProfile
} from '../api/types';
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
import {
  History,
  IJobRow,
  jobRows,
  latestRunByJob,
  pruneHistory,
  pushSample
} from '../logic/state';

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

export interface IPanelState {
  profile: ISection<IServerProfile>;
  experiments: ISection<IExperiments>;
  jobs: ISection<IJobRow[]>;
  deployments: ISection<IDeploymentState[]>;
  history: History;
  audit: IAuditState;
}

export interface IShipyardClients {
  server: ShipyardServerService;
  scheduler: SchedulerService;
  deployer: DeployerService;
  audit: AuditService;
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
      this.refreshDeployments(),
      // asked for by the user: the records again (the poll never reads the trail)
      force && auditVisible(audit) && audit.status !== 'idle'
        ? this.loadAudit(audit.filters)
        : Promise.resolve()
    ]);
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

  private _setAudit(audit: IAuditState): void {
    this._state = { ...this._state, audit };
    this._changed.emit();
  }

  private _state: IPanelState = {
    profile: empty(),
    experiments: empty(),
    jobs: empty(),
    deployments: empty(),
    history: {},
    audit: INITIAL_AUDIT
  };
  /** Bumped by each first-page load: answers of an older one are dropped. */
  private _auditTicket = 0;
  private _changed = new Signal<this, void>(this);
}

/** The HTTP status of an error (0 when the server was not reached or it is not an API error). */
function statusOf(error: unknown): number {
  return error instanceof ShipyardAPIError ? error.status : 0;
}
