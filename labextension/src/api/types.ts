/**
 * The JSON the panel reads and sends, under the names the code uses.
 *
 * What the scheduler, the deployer, the audit, the usage and the alerts service answer
 * (which the server extension's /shipyard/api/scheduler/, deployer/, audit/, usage and alerts
 * routes forward unchanged) is
 * generated from each service's OpenAPI document into ./generated/ (`jlpm gen:types`,
 * labextension/scripts/gen_types.py; tests/test_panel_types.py fails when those files are
 * stale): the aliases below name its ``components["schemas"]``, so a field exists here
 * exactly when the service's pydantic model has it. Never edit ./generated/ by hand.
 *
 * Written by hand, because no service document describes them: the server extension's
 * own answers, GET /shipyard/api/profile and /shipyard/api/experiments
 * (server_ext/handlers/server.py). Times are ISO 8601 strings in UTC unless a field says otherwise.
 */
import type {
  components as AuditComponents,
  operations as AuditOperations
} from './generated/audit';
import type {
  components as AlertsComponents,
  operations as AlertsOperations
} from './generated/alerts';
import type { components as DeployerComponents } from './generated/deployer';
import type { components as SchedulerComponents } from './generated/scheduler';
import type {
  components as UsageComponents,
  operations as UsageOperations
} from './generated/usage';

type Scheduler = SchedulerComponents['schemas'];
type Deployer = DeployerComponents['schemas'];
type Audit = AuditComponents['schemas'];
type Usage = UsageComponents['schemas'];
type Alerts = AlertsComponents['schemas'];

/**
 * Every error answer of the services: ``message`` says what to fix, ``errors`` (the
 * scheduler's and the deployer's 400s) lists each bad field. The deployer's model is the
 * same; the audit service's has no ``errors``. The server extension's own errors carry a
 * ``message`` too, so the client reads any of them as a ``Partial`` of this.
 */
export type IErrorBody = Scheduler['ErrorResponse'];

// ------------------------------------------------------------------ /shipyard/api/profile

/** The profile's public summary (hub_ext/profiles/model.py ``public_summary``). */
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

/** GET /shipyard/api/profile (server_ext/handlers/server.py ``current_profile``). */
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
   * Whether the hub says the server's owner is a hub admin (server_ext/handlers/server.py
   * ``owner_is_admin``): the panel shows its Audit section then. The audit service alone
   * decides who reads the trail.
   */
  admin?: boolean;
  /**
   * The optional hub services this server was given the address of (``services_here``):
   * the panel shows the Usage and Alerts sections only for those the admin runs.
   */
  services?: { usage?: boolean; alerts?: boolean };
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

// ------------------------------------------------------------------ scheduler (generated)

export type RunStatus = Scheduler['RunStatus'];
export type ICronTrigger = Scheduler['CronTrigger'];
/** An IANA time zone the scheduler knows (its document lists them). */
export type TimeZoneName = ICronTrigger['timezone'];
export type Trigger = IDescribeTrigger['trigger'];
export type IDescribeTrigger = Scheduler['DescribeTrigger'];
export type IJob = Scheduler['DescribeJob'];
export type IRun = Scheduler['DescribeRun'];
export type IListJobs = Scheduler['ListJobsResponse'];
export type IListRuns = Scheduler['ListRunsResponse'];
/** A piece of a run's log; its ``status`` is the run's, as a plain string. */
export type ILogChunk = Scheduler['LogChunk'];
export type ISchedulerProfile = Scheduler['ProfileInfo'];
export type IProfiles = Scheduler['ProfilesResponse'];
/** PATCH /jobs/<id>: only the fields sent change. */
export type IUpdateJob = Partial<Scheduler['UpdateJob']>;
export type IUpdateJobResponse = Scheduler['UpdateJobResponse'];
/** POST /jobs/<id>/runs: parameters over the job's, for this run only. */
export type ICreateRun = Scheduler['CreateRun'];

/** A JSON value: what the scheduler takes as a parameter. */
export type JSONValue =
  null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** POST /previews/cron: a cron trigger, and how many next runs (3) after when (now). */
export type ICronPreviewRequest = Pick<Scheduler['PreviewCronRequest'], 'expression' | 'timezone'> &
  Partial<Pick<Scheduler['PreviewCronRequest'], 'count' | 'after'>>;
/** The next runs of a cron trigger, as the scheduler will fire them (UTC). */
export type ICronPreview = Scheduler['PreviewCronResponse'];
/** A parameter of the notebook's ``parameters`` cell, as papermill's inspector reads it. */
export type ISchedulerParameter = Scheduler['ParameterInfo'];
/** POST /previews/parameters: a notebook, and the text typed per parameter. */
export type IParametersPreviewRequest = Scheduler['PreviewParametersRequest'];
/** The notebook for POST /previews/parameters (nbformat 4 JSON). */
export type INotebookContent = IParametersPreviewRequest['notebook'];
/** The notebook's parameters, and each typed text read as its value or refused. */
export type IParametersPreview = Scheduler['PreviewParametersResponse'];
/** One typed text: its ``value`` as JSON, or its ``error``. */
export type IParameterValue = Scheduler['ParameterValue'];

/**
 * POST /jobs, what the Schedule dialog sends: these fields of the scheduler's
 * ``CreateJobRequest`` (the others keep the service's defaults).
 */
export type ICreateJob = Pick<
  Scheduler['CreateJobRequest'],
  'name' | 'profile' | 'source_path' | 'parameters'
> & { triggers: ICronTrigger[] };

// ------------------------------------------------------------------ pipelines (generated)

/** A pipeline: its file, its steps in run order (each with the ids of the steps it needs). */
export type IPipeline = Scheduler['DescribePipeline'];
/** A step of a pipeline, as its file says. */
export type IPipelineStepDefinition = Scheduler['DescribeStepDefinition'];
/** One run of a pipeline, with every step's state. */
export type IPipelineRun = Scheduler['DescribePipelineRun'];
/** A step of a pipeline run: its state, its latest scheduler run, its duration. */
export type IPipelineStep = Scheduler['DescribeStep'];
/** Where a pipeline run is: running, succeeded, failed or cancelled. */
export type PipelineRunState = Scheduler['RunState'];
/** Where one step of a pipeline run is. */
export type StepState = Scheduler['StepState'];
export type IListPipelines = Scheduler['ListPipelinesResponse'];
export type IListPipelineRuns = Scheduler['ListPipelineRunsResponse'];
/** POST /pipelines: the pipeline.yaml, relative to the user's home. */
export type ICreatePipeline = Scheduler['CreatePipeline'];
/** PATCH /pipelines/<id>: pause (``true``) or resume (``false``) the pipeline's triggers. */
export type IPausePipeline = Scheduler['PausePipeline'];

/**
 * A trigger of a pipeline, as its file says (``DescribePipeline.triggers``). The service's
 * document types them as plain objects (the pipeline file's own models,
 * hub_ext/services/scheduler/pipelines/spec.py ``PipelineTrigger``), so they are spelled out
 * here from the job triggers they extend: a file trigger adds how long the file must be
 * quiet, and a pipeline may follow another pipeline.
 */
export type IPipelineTrigger =
  | ICronTrigger
  | (Scheduler['FileTrigger'] & { debounce_seconds?: number })
  | Scheduler['WebhookTrigger']
  | Scheduler['AfterJobTrigger']
  | { kind: 'after_pipeline'; pipeline: string };

// ------------------------------------------------------------------ deployer (generated)

export type VersionState = IVersion['state'];
export type IBreaker = Deployer['BreakerState'];
export type IVersion = Deployer['DescribeVersion'];
export type IDeployment = Deployer['DescribeDeployment'];
export type IListDeployments = Deployer['ListDeploymentsResponse'];
export type IVersionMetrics = Deployer['VersionMetrics'];
export type IDeploymentMetrics = Deployer['DeploymentMetrics'];
export type IPromoteVersion = Deployer['PromoteVersion'];
/** POST .../rollback: without ``version``, back to the version that served before. */
export type IRollbackVersion = Partial<Deployer['RollbackVersion']>;
/** A version's chain back to its run, pipeline and input files (GET …/versions/{v}/lineage). */
export type ILineage = Deployer['DescribeLineage'];
export type ILineageRun = Deployer['LineageRun'];
export type ILineageFile = Deployer['LineageFile'];
export type ILineageMissing = Deployer['LineageMissing'];
export type LineageLink = ILineageMissing['link'];

// ------------------------------------------------------------------ audit (generated)

/**
 * One record of the trail, as stored and hashed (schema record.v1 plus the chain; any
 * other field the record carries is kept, as it is part of the hash).
 */
export type IAuditRecord = Audit['AuditRecord'];
/** GET /shipyard/api/audit/records: a page, newest first. */
export type IAuditRecords = Audit['ListRecordsResponse'];
/** Filters of the records (all optional); the service checks them and says what to fix. */
export type IAuditQuery = NonNullable<AuditOperations['get_api_records']['parameters']['query']>;
/** One break in the trail. */
export type IAuditProblem = Audit['Problem'];
/** GET /shipyard/api/audit/verify. */
export type IAuditVerify = Audit['VerifyResponse'];

// ------------------------------------------------------------------ usage (generated)

/** What one user, group, profile, object, kind or day used over the period, and its cost. */
export type IUsageRow = Usage['UsageRow'];
/** GET /shipyard/api/usage: the rows of one ``by`` over [since, until). */
export type IUsageReport = Usage['UsageResponse'];
/** The query of GET /shipyard/api/usage (all optional); the service says what to fix. */
export type IUsageQuery = NonNullable<UsageOperations['get_api_usage']['parameters']['query']>;
/** GET /shipyard/api/usage/waste: idle servers holding resources, and right-sizing. */
export type IUsageWaste = Usage['WasteResponse'];
export type IIdleServer = Usage['IdleServer'];
export type IRecommendation = Usage['Recommendation'];

// ------------------------------------------------------------------ alerts (generated)

/** One episode of an alert (``pending → firing → resolved``), as its owner or an admin sees it. */
export type IAlert = Alerts['DescribeAlert'];
/** GET /shipyard/api/alerts: the caller's alerts (an admin's: everyone's), newest first. */
export type IAlertList = Alerts['ListAlertsResponse'];
/** The query of GET /shipyard/api/alerts (all optional); the service says what to fix. */
export type IAlertsQuery = NonNullable<AlertsOperations['get_api_alerts']['parameters']['query']>;
/**
 * GET and PUT /shipyard/api/alerts/targets: the caller's own notification targets, each
 * redacted to its scheme and host, and the schemes a target may use on this hub.
 */
export type ITargets = Alerts['DescribeTargets'];
/** The body of PUT /shipyard/api/alerts/targets: apprise URLs, replacing every target. */
export type ISetTargets = Alerts['SetTargets'];
