/**
 * The JSON the server extension's REST handlers answer with (server_ext/handlers.py and
 * the scheduler's and deployer's models it forwards: hub_ext/services/scheduler/models.py
 * and api.py, hub_ext/services/deployer/models.py, hub_ext/services/audit/models.py). Times are ISO 8601 strings in UTC
 * unless a field says otherwise. Only the fields the frontend reads are typed.
 */
import type { JSONValue } from '../logic/parameters';

/** Every error answer: ``message`` says what to fix. */
export interface IErrorBody {
  status?: number;
  message: string;
  errors?: { field: string; message: string }[];
}

// ------------------------------------------------------------------ /shipyard/api/profile

/** The profile's public summary (hub_ext/profiles.py ``public_summary``). */
export interface IProfileSummary {
  slug: string;
  display_name: string;
  description?: string | null;
  environment?: string | null;
  cpu_guarantee?: number | string | null;
  cpu_limit?: number | string | null;
  mem_guarantee?: number | string | null;
  mem_limit?: number | string | null;
  gpu?: number | null;
}

/** GET /shipyard/api/profile (server_ext/handlers.py ``current_profile``). */
export interface IServerProfile {
  user: string | null;
  server_name: string;
  profile: IProfileSummary | null;
  environment: {
    name: string | null;
    digest: string | null;
    python: string;
    python_version: string;
  };
  limits: {
    cpu_limit: number | null;
    cpu_guarantee: number | null;
    mem_limit: number | null;
    mem_guarantee: number | null;
    gpus: string[] | null;
  };
  enforced?: {
    kind: string;
    path: string | null;
    mem_limit: number | null;
    mem_usage: number | null;
    cpu_limit: number | null;
  };
  /** Live use of the server's processes, when the server reports it. */
  usage?: {
    cpu_percent: number | null;
    mem_bytes: number | null;
  };
  /**
   * Whether the hub says the server's owner is a hub admin (server_ext/handlers.py
   * ``owner_is_admin``): the panel shows its Audit section then. The audit service alone
   * decides who reads the trail.
   */
  admin?: boolean;
}

// ------------------------------------------------------------------ /shipyard/api/experiments

export interface IExperimentRun {
  run_id: string;
  run_name: string | null;
  experiment_id: string;
  experiment_name: string | null;
  /** MLflow's: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED. */
  status: string | null;
  /** ms since the epoch. */
  start_time: number | null;
  end_time?: number | null;
  metrics: Record<string, number>;
  url: string | null;
}

export interface IExperiments {
  tracking_ui: string | null;
  runs: IExperimentRun[];
}

// ------------------------------------------------------------------ scheduler

export type RunStatus =
  | 'queued'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'timed_out'
  | 'orphaned'
  | 'skipped';

export interface ICronTrigger {
  kind: 'cron';
  expression: string;
  timezone: string;
}

export type Trigger =
  | ICronTrigger
  | { kind: 'file'; glob: string }
  | { kind: 'webhook' }
  | { kind: 'after_job'; upstream_job_id: string };

export interface IDescribeTrigger {
  id: string;
  trigger: Trigger;
  next_fire_at: string | null;
  last_fired_at: string | null;
}

export interface IJob {
  id: string;
  owner: string;
  name: string;
  source_path: string | null;
  parameters: Record<string, JSONValue>;
  profile: string;
  paused: boolean;
  version: number;
  triggers: IDescribeTrigger[];
  read_only: boolean;
  created_at: string;
  updated_at: string;
}

export interface IRun {
  id: string;
  job_id: string;
  status: RunStatus;
  reason: string;
  attempt: number;
  parameters: Record<string, JSONValue>;
  queued_at: string;
  started_at: string | null;
  ended_at: string | null;
  output_path: string | null;
  log_path: string | null;
  mlflow_run_id: string | null;
  cells_done: number | null;
  cells_total: number | null;
  outputs_deleted_at: string | null;
}

export interface IListJobs {
  jobs: IJob[];
  next_token: string | null;
}

export interface IListRuns {
  runs: IRun[];
  next_token: string | null;
}

export interface ILogChunk {
  text: string;
  offset: number;
  next_offset: number;
  complete: boolean;
  status: RunStatus;
  cells_done: number | null;
  cells_total: number | null;
}

export interface ISchedulerProfile {
  slug: string;
  display_name: string;
  description: string;
  environment: string;
  default: boolean;
  /** False when this machine cannot run it (a GPU profile without a GPU); absent: true. */
  available?: boolean;
  /** Why not, e.g. "no GPU on this machine". */
  unavailable_reason?: string | null;
}

/** POST /jobs (hub_ext/services/scheduler/api.py ``CreateJobRequest``), what the dialog sends. */
export interface ICreateJob {
  name: string;
  profile: string;
  source_path: string;
  parameters: Record<string, JSONValue>;
  triggers: ICronTrigger[];
}

// ------------------------------------------------------------------ deployer

export type VersionState = 'starting' | 'ready' | 'failed' | 'stopped';

export interface IBreaker {
  open: boolean;
  reason: string | null;
  since: string | null;
  serving: boolean;
}

export interface IVersion {
  version: number;
  model_uri: string;
  profile: string;
  state: VersionState;
  reason: string | null;
  created_at: string;
  ready_at: string | null;
  stopped_at: string | null;
  pending_percent: number | null;
  breaker: IBreaker;
}

export interface IDeployment {
  owner: string;
  name: string;
  url: string;
  profile: string;
  replicas: number;
  /** Version number (as a string) → percent of the traffic. */
  traffic: Record<string, number>;
  previous_version: number | null;
  versions: IVersion[];
  created_at: string;
  updated_at: string;
}

export interface IVersionMetrics {
  state: VersionState;
  breaker: IBreaker;
  traffic: number;
  replicas_ready: number;
  requests: number;
  errors: number;
  window_seconds: number;
  window_requests: number;
  window_errors: number;
  /** Requests per second over the window. */
  rate: number;
  /** Share (0 to 1) of the window's requests that failed. */
  error_rate: number;
  latency_ms: { p50: number | null; p99: number | null };
}

export interface IDeploymentMetrics {
  versions: Record<string, IVersionMetrics>;
}

// ------------------------------------------------------------------ audit

export type AuditOutcome = 'allowed' | 'denied' | 'failed';

/**
 * One record of the trail, as stored and hashed (hub_ext/services/audit/models.py
 * ``AuditRecord``; schema record.v1 plus the chain).
 */
export interface IAuditRecord {
  /** Position in the trail: 1, 2, 3, ... */
  seq: number;
  /** When, ISO 8601 UTC (jupyter_events' own field). */
  __timestamp__: string;
  /** ``<object type>.<verb>``, e.g. ``job.create``. */
  action: string;
  /** Who acted (a hub user or a service); null if anonymous. */
  actor: string | null;
  actor_kind: string;
  on_behalf_of?: string | null;
  /** ``<type>/<id or name>``. */
  target: string | null;
  owner: string | null;
  outcome: AuditOutcome | string;
  reason: string | null;
  /** The client address. */
  client: string | null;
  source?: string | null;
  details?: Record<string, JSONValue> | null;
  prev_hash: string;
  hash: string;
}

/** GET /shipyard/api/audit/records: a page, newest first. */
export interface IAuditRecords {
  records: IAuditRecord[];
  /** Pass as ``before`` for the next (older) page; null on the last page. */
  next_before: number | null;
}

/** Filters of the records (all optional); the service checks them and says what to fix. */
export interface IAuditQuery {
  user?: string;
  /** An action (``job.create``) or a family (``job``). */
  action?: string;
  /** An ISO time, or an age: ``30m``, ``2h``, ``7d``, ``4w``. */
  since?: string;
  limit?: number;
  before?: number;
}

/** One break in the trail. */
export interface IAuditProblem {
  /** ``file``, ``table`` or ``both``. */
  where: string;
  seq: number | null;
  /** edited, deleted, inserted, reordered, mismatch or malformed. */
  kind: string;
  message: string;
}

/** GET /shipyard/api/audit/verify. */
export interface IAuditVerify {
  ok: boolean;
  file_records: number;
  table_records: number;
  first_seq: number | null;
  last_seq: number | null;
  problems: IAuditProblem[];
}
