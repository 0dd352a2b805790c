/**
 * The panel and the dialogs' forms rendered to HTML (react-dom/server, no browser): the
 * selectors the browser tests and users' styles rely on, and what each state says.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';

import type {
  IAuditRecord,
  IDeployment,
  IJob,
  IPipeline,
  IPipelineRun,
  IPipelineStep,
  IRun,
  ISchedulerParameter,
  IServerProfile,
  IUsageRow
} from '../api/types';
import type { IAlert } from '../api/types';
import { DeployForm, IDeployFormProps } from '../dialogs/deployForm';
import { LineageView } from '../dialogs/lineageView';
import { PipelineRefusalView, ScheduledPipelineView } from '../dialogs/schedulePipelineView';
import type { IFormValues } from '../dialogs/fields';
import { AddPipelineForm, RunPipelineForm } from '../dialogs/pipelineForms';
import { IScheduleFieldsProps, ScheduleFields, ScheduleForm } from '../dialogs/scheduleForm';
import { IAuditState, INITIAL_AUDIT } from '../logic/audit';
import type { IScheduleValues } from '../logic/forms';
import { jobRows, pushSample } from '../logic/state';
import { IAlertsState, INITIAL_ALERTS } from '../logic/alerts';
import { INITIAL_TARGETS, ITargetsState } from '../logic/targets';
import { INITIAL_USAGE, IUsageState } from '../logic/usage';
import type { IPanelState, IPipelinesState, ISection, ShipyardModel } from '../panel/model';
import { IPanelActions, PanelView } from '../panel/views';

const noop = () => undefined;
const actions: IPanelActions = {
  refresh: noop,
  runNow: noop,
  togglePause: noop,
  downloadOutput: noop,
  showLogs: noop,
  rollback: noop,
  showLineage: noop,
  outputHref: run => `/user/alice/shipyard/api/scheduler/runs/${run.id}/output`,
  auditFilter: noop,
  auditMore: noop,
  auditVerify: noop,
  usageMetric: noop,
  saveTargets: noop,
  addPipeline: noop,
  selectPipeline: noop,
  selectPipelineRun: noop,
  runPipeline: noop,
  repairPipelineRun: noop,
  cancelPipelineRun: noop,
  togglePipelinePause: noop,
  showStepLog: noop,
  downloadStepOutput: noop,
  stepOutputHref: step => `/user/alice/shipyard/api/scheduler/runs/${step.run_id}/output`
};

const NO_PIPELINES: IPipelinesState = {
  list: { status: 'ok', data: [], error: null, updated: 1 },
  selected: null,
  runs: { status: 'loading', data: null, error: null, updated: null },
  run: null,
  detail: { status: 'loading', data: null, error: null, updated: null },
  actionError: null
};

function ok<T>(data: T): ISection<T> {
  return { status: 'ok', data, error: null, updated: 1 };
}

/** The panel for ``state``; the Pipelines, Usage and Alerts sections empty unless given. */
function render(
  given: Omit<IPanelState, 'pipelines' | 'usage' | 'alerts' | 'alertTargets'> &
    Partial<Pick<IPanelState, 'pipelines' | 'usage' | 'alerts' | 'alertTargets'>>
): HTMLString {
  const state: IPanelState = {
    pipelines: NO_PIPELINES,
    usage: INITIAL_USAGE,
    alerts: INITIAL_ALERTS,
    alertTargets: INITIAL_TARGETS,
    ...given
  };
  const model = {
    state,
    changed: { connect: noop, disconnect: noop }
  } as unknown as ShipyardModel;
  return renderToStaticMarkup(<PanelView model={model} actions={actions} busy={new Set()} />);
}
type HTMLString = string;

const profile: IServerProfile = {
  user: 'alice',
  server_name: '',
  profile: {
    slug: 'science',
    display_name: 'Data science',
    environment: 'datascience',
    gpu: 0
  },
  environment: {
    name: 'datascience',
    digest: 'sha256:0123456789abcdef0123456789',
    python: '/opt/envs/datascience/bin/python',
    python_version: '3.11.9'
  },
  limits: {
    cpu_limit: 2,
    cpu_guarantee: 0.5,
    mem_limit: 4 * 1024 ** 3,
    mem_guarantee: null,
    gpus: null
  },
  usage: { cpu_percent: 37.5, mem_bytes: 1024 ** 3 }
};

const job = {
  id: 'j1',
  owner: 'alice',
  name: 'nightly-iris',
  source_path: 'iris.ipynb',
  parameters: {},
  profile: 'science',
  paused: false,
  version: 1,
  read_only: false,
  created_at: '2025-01-01T00:00:00Z',
  updated_at: '2025-01-01T00:00:00Z',
  triggers: [
    {
      id: 't1',
      trigger: { kind: 'cron', expression: '30 5 * * 1-5', timezone: 'Europe/Berlin' },
      next_fire_at: '2025-03-31T03:30:00Z',
      last_fired_at: null
    }
  ]
} as IJob;
const running = {
  id: 'r1',
  job_id: 'j1',
  status: 'running',
  reason: '',
  queued_at: '2025-03-30T10:00:00Z',
  started_at: '2025-03-30T10:00:01Z',
  ended_at: null,
  output_path: null,
  log_path: '/logs/r1.log',
  cells_done: 3,
  cells_total: 12,
  outputs_deleted_at: null
} as unknown as IRun;

const deployment = {
  owner: 'alice',
  name: 'iris',
  url: '/services/deployer/models/alice/iris/invocations',
  profile: 'science',
  replicas: 1,
  traffic: { '1': 100 },
  previous_version: null,
  versions: [
    {
      version: 1,
      model_uri: 'models:/alice-iris/1',
      profile: 'science',
      state: 'ready',
      reason: null,
      created_at: '2025-01-01T00:00:00Z',
      ready_at: '2025-01-01T00:01:00Z',
      stopped_at: null,
      pending_percent: null,
      breaker: { open: false, reason: null, since: null, serving: false },
      signature: null,
      canary: null,
      lineage: null
    }
  ],
  grants: { users: [], groups: [], services: [] },
  created_at: '2025-01-01T00:00:00Z',
  updated_at: '2025-01-01T00:00:00Z'
} as IDeployment;
const metrics = {
  versions: {
    '1': {
      state: 'ready',
      breaker: { open: false, reason: null, since: null, serving: false },
      traffic: 100,
      replicas_ready: 1,
      requests: 40,
      errors: 0,
      window_seconds: 60,
      window_requests: 30,
      window_errors: 0,
      rate: 0.5,
      error_rate: 0,
      latency_ms: { p50: 12, p99: 40 }
    }
  }
} as const;

describe('PanelView', () => {
  it('renders the four sections with their data and hooks', () => {
    let history = pushSample({}, 'iris', metrics as never, 1000);
    history = pushSample(history, 'iris', metrics as never, 6000);
    const html = render({
      profile: ok(profile),
      experiments: ok({
        tracking_ui: 'http://hub/services/tracking/',
        runs: [
          {
            run_id: 'abc',
            run_name: 'browser-run',
            experiment_id: '1',
            experiment_name: 'iris',
            status: 'FINISHED',
            start_time: 1,
            metrics: { accuracy: 0.9666 },
            url: 'http://hub/services/tracking/#/experiments/1/runs/abc'
          }
        ]
      }),
      jobs: ok(jobRows([job], new Map([['j1', running]]))),
      deployments: ok([{ deployment, metrics: metrics as never, metricsError: null }]),
      history,
      audit: INITIAL_AUDIT
    });
    for (const name of ['profile', 'experiments', 'jobs', 'deployments']) {
      expect(html).toContain(`data-shipyard-section="${name}"`);
    }
    expect(html).toContain('data-action="refresh"');
    // profile
    expect(html).toContain('Data science');
    expect(html).toContain('2 cores');
    expect(html).toContain('4 GiB');
    expect(html).toContain('sha256:0123456789ab');
    expect(html).toContain('37.5% of 200%');
    expect(html).toContain('1 GiB of 4 GiB');
    // experiments
    expect(html).toMatch(
      /data-action="open-mlflow" href="http:\/\/hub\/services\/tracking\/"[^>]*>Open MLflow/
    );
    expect(html).toContain('browser-run');
    expect(html).toContain('data-status="finished"');
    expect(html).toContain('0.9666');
    // jobs
    expect(html).toContain('data-shipyard-job="nightly-iris"');
    expect(html).toContain('class="shipyard-status" data-status="running"');
    expect(html).toContain('Next run: Mon 2025-03-31 05:30 CEST');
    expect(html).toMatch(/<progress class="shipyard-progress" max="12" value="3"/);
    expect(html).toContain('3/12 cells');
    expect(html).toContain('data-action="run-now"');
    expect(html).toMatch(/data-action="pause" aria-pressed="false"[^>]*>Pause</);
    expect(html).toContain('data-action="logs"');
    expect(html).not.toContain('data-action="output"'); // no output while running
    // deployments
    expect(html).toContain('data-shipyard-deployment="iris" data-live-version="1"');
    expect(html).toContain('data-shipyard-version="1"');
    expect(html).toContain('100%');
    expect(html).toContain('12 ms');
    expect(html).toContain('40 ms');
    expect(html).toContain('0.5 req/s');
    expect(html).toContain('<svg');
    expect(html).toMatch(/data-action="rollback" disabled=""/); // nothing to roll back to
    expect(html).toMatch(/data-action="lineage"[^>]*>Lineage</); // one per version
    // not an admin: nothing of the Audit section
    expect(html).not.toContain('data-shipyard-section="audit"');
    expect(html).not.toContain('audit-verify');
  });

  it('says what to do next when there is nothing yet', () => {
    const html = render({
      profile: ok({ ...profile, profile: null }),
      experiments: {
        status: 'unavailable',
        data: null,
        error: 'Experiment tracking is not set up for this server',
        updated: 1
      },
      jobs: ok([]),
      deployments: ok([]),
      history: {},
      audit: INITIAL_AUDIT
    });
    expect(html).toContain('No Shipyard profile');
    expect(html).toContain('Experiment tracking is not set up for this server');
    expect(html).toContain('No jobs yet: use <strong>Schedule…</strong>');
    expect(html).toContain('%schedule');
    expect(html).toContain('No deployments yet');
  });

  it('shows a section’s error above what it showed before, and a paused job', () => {
    const finished = {
      ...running,
      status: 'failed',
      reason: 'cell 4 raised ValueError',
      ended_at: '2025-03-30T10:02:00Z',
      output_path: '/out/r1.ipynb'
    } as IRun;
    const html = render({
      profile: { status: 'loading', data: null, error: null, updated: null },
      experiments: ok({ tracking_ui: null, runs: [] }),
      jobs: {
        status: 'error',
        data: jobRows([{ ...job, paused: true }], new Map([['j1', finished]])),
        error: 'The scheduler is not reachable',
        updated: 2
      },
      deployments: ok([]),
      history: {},
      audit: INITIAL_AUDIT
    });
    expect(html).toContain('Loading…');
    expect(html).toMatch(/role="alert">The scheduler is not reachable/);
    expect(html).toContain('data-status="failed"');
    expect(html).toContain('cell 4 raised ValueError');
    expect(html).toMatch(/data-action="pause" aria-pressed="true"[^>]*>Resume</);
    expect(html).toContain('Paused: resume it to run again.');
    expect(html).toContain('href="/user/alice/shipyard/api/scheduler/runs/r1/output"');
    expect(html).toContain('No runs yet');
    expect(html).not.toContain('Open MLflow');
  });
});

describe('ScheduleForm', () => {
  const parameters: ISchedulerParameter[] = [
    { name: 'city', type: 'str', default: '"Berlin"', help: 'where', text: 'Berlin' },
    { name: 'n', type: 'int', default: '3', help: '', text: '3' }
  ];
  const profiles = [
    {
      slug: 'tiny',
      display_name: 'Tiny',
      description: '',
      environment: 'base',
      default: true,
      available: true,
      unavailable_reason: null
    },
    {
      slug: 'science',
      display_name: 'Data science',
      description: '',
      environment: 'datascience',
      default: false,
      available: true,
      unavailable_reason: null
    }
  ];
  const initial = {
    name: 'iris',
    cron: '30 5 * * 1-5',
    timezone: 'Europe/Berlin',
    profile: 'science',
    params: { city: 'Berlin', n: '3' }
  };
  const never = () => new Promise<never>(noop);
  const previews = { cron: never, parameters: never };
  const form = (values: IScheduleValues): IFormValues<IScheduleValues> => ({
    values,
    set: noop,
    field: key => ({ value: values[key as keyof IScheduleValues] as string, onChange: noop })
  });
  const renderFields = (props: Partial<IScheduleFieldsProps>) =>
    renderToStaticMarkup(
      <ScheduleFields
        profiles={profiles}
        profilesError={null}
        initial={initial}
        form={form(initial)}
        parameters={parameters}
        parametersError={null}
        errors={[]}
        cron={{ status: 'checking' }}
        params={{ status: 'ok', data: null }}
        {...props}
      />
    );

  it('says "checking…" until the scheduler answers', () => {
    const html = renderToStaticMarkup(
      <ScheduleForm
        profiles={profiles}
        profilesError={null}
        initial={initial}
        parameters={parameters}
        parametersError={null}
        errors={[]}
        previews={previews}
        onChange={noop}
      />
    );
    for (const name of [
      'shipyard-job-name',
      'shipyard-cron',
      'shipyard-tz',
      'shipyard-profile',
      'shipyard-param-city',
      'shipyard-param-n'
    ]) {
      expect(html).toContain(`name="${name}"`);
    }
    expect(html).toMatch(/class="shipyard-cron-preview shipyard-checking" data-valid="checking"/);
    expect(html).toContain('checking…');
    expect(html).not.toContain('<li data-time=');
    expect(html).toMatch(
      /<option value="science"[^>]*selected=""[^>]*>Data science \(science\)<\/option>/
    );
    expect(html).toContain('value="Berlin"');
  });

  it('shows the next runs the scheduler answered, in the zone, with words', () => {
    const html = renderFields({
      cron: {
        status: 'ok',
        data: {
          expression: '30 5 * * 1-5',
          timezone: 'Europe/Berlin',
          every_hour: false,
          times: ['2027-01-04T04:30:00Z', '2027-01-05T04:30:00Z', '2027-01-06T04:30:00Z']
        }
      }
    });
    expect(html).toMatch(
      /class="shipyard-cron-preview" data-valid="true"[^>]*>At 05:30, Monday through Friday</
    );
    expect(html.match(/<li data-time=/g)).toHaveLength(3);
    expect(html).toContain('Mon 2027-01-04 05:30 CET');
  });

  it("shows the scheduler's message for a bad expression and for a bad value", () => {
    const html = renderFields({
      cron: { status: 'error', message: "expression: cron expression '61 * * * *' is not valid" },
      params: {
        status: 'ok',
        data: {
          has_parameters_cell: true,
          parameters,
          valid: false,
          values: [
            {
              name: 'n',
              text: 'x',
              value: null,
              error:
                "n must be a whole number, e.g. 3 or -1 (the notebook declares int, default 3), not 'x'"
            }
          ]
        }
      }
    });
    expect(html).toContain('data-valid="false"');
    expect(html).toContain('is not valid');
    expect(html).not.toContain('<li data-time=');
    expect(html).toMatch(
      /class="shipyard-error shipyard-param-error" data-param="n" role="alert">n must be a whole number/
    );
    expect(html).not.toContain('data-param="city"');
  });

  it('shows a profile this machine cannot run disabled, with the reason', () => {
    const html = renderFields({
      profiles: [
        ...profiles,
        {
          slug: 'gpu',
          display_name: 'GPU',
          description: 'One NVIDIA GPU',
          environment: 'gpu',
          default: false,
          available: false,
          unavailable_reason: 'no GPU on this machine'
        }
      ],
      form: form({ ...initial, profile: 'tiny' })
    });
    expect(html).toMatch(
      /<option value="gpu" title="Not available: no GPU on this machine" disabled="">GPU \(gpu\) – not available: no GPU on this machine<\/option>/
    );
    expect(html).toMatch(/<option value="tiny"[^>]*>Tiny \(tiny\) – default<\/option>/);
    expect(html).not.toMatch(/<option value="tiny"[^>]*disabled/);
  });

  it('shows the refusal above the values as typed', () => {
    const html = renderFields({
      parameters: [],
      errors: ["a job named 'iris' already exists"]
    });
    expect(html).toMatch(
      /shipyard-dialog-error" role="alert"><div>a job named &#x27;iris&#x27; already exists/
    );
    expect(html).toContain('No cell tagged <code>parameters</code>');
  });

  const pipelines = [
    { path: 'churn/pipeline.yaml', name: 'churn', step: 'train' },
    { path: 'churn/b.pipeline.yaml', name: null, step: null }
  ];

  it('offers the pipelines of the folder, the notebook as a job chosen first', () => {
    const html = renderFields({ pipelines });
    expect(html).toMatch(
      /<select class="jp-mod-styled" name="shipyard-schedule-what"><option value="" selected="">This notebook, as a job<\/option><option value="churn\/pipeline.yaml" title="churn\/pipeline.yaml">The pipeline churn \(its step train\)<\/option><option value="churn\/b.pipeline.yaml" title="churn\/b.pipeline.yaml">The pipeline churn\/b.pipeline.yaml<\/option><\/select>/
    );
    for (const name of ['shipyard-job-name', 'shipyard-cron', 'shipyard-profile']) {
      expect(html).toContain(`name="${name}"`);
    }
    expect(html).not.toContain('shipyard-schedule-pipeline-note');
    // without pipeline files there is nothing to choose: the job form as it was
    expect(renderFields({})).not.toContain('shipyard-schedule-what');
  });

  it('asks only the cron and time zone when a pipeline is chosen, saying where they go', () => {
    const values = { ...initial, pipeline: 'churn/pipeline.yaml' };
    const html = renderFields({ pipelines, initial: values, form: form(values) });
    expect(html).toContain(
      '<option value="churn/pipeline.yaml" title="churn/pipeline.yaml" selected="">'
    );
    expect(html).toContain(
      'Schedule the pipeline <strong>churn</strong>: the cron trigger goes into ' +
        '<code>churn/pipeline.yaml</code> (replacing a cron trigger there)'
    );
    for (const name of ['shipyard-cron', 'shipyard-tz']) {
      expect(html).toContain(`name="${name}"`);
    }
    for (const name of ['shipyard-job-name', 'shipyard-profile', 'shipyard-param-city']) {
      expect(html).not.toContain(`name="${name}"`);
    }
  });
});

describe('DeployForm', () => {
  const renderForm = (props: Pick<IDeployFormProps, 'initial' | 'profiles'>) =>
    renderToStaticMarkup(<DeployForm errors={[]} onChange={noop} {...props} />);

  it('has the named inputs and previews the %deploy line', () => {
    const html = renderForm({
      initial: { model: 'model', name: 'iris', profile: '' },
      profiles: [
        {
          slug: 'science',
          display_name: 'Data science',
          description: '',
          environment: 'x',
          default: false,
          available: true,
          unavailable_reason: null
        }
      ]
    });
    for (const name of [
      'shipyard-deploy-model',
      'shipyard-deploy-name',
      'shipyard-deploy-profile'
    ]) {
      expect(html).toContain(`name="${name}"`);
    }
    expect(html).toContain('<code>%deploy model --name iris</code>');
  });

  it('says what is wrong before anything runs', () => {
    const html = renderForm({
      initial: { model: 'model', name: 'Iris--1', profile: '' },
      profiles: []
    });
    expect(html).toContain('data-valid="false"');
    expect(html).toContain('is not a deployment name');
  });
});

describe('PanelView: the Audit section', () => {
  const base = {
    profile: ok(profile),
    experiments: ok({ tracking_ui: null, runs: [] }),
    jobs: ok([]),
    deployments: ok([]),
    history: {}
  };
  const records: IAuditRecord[] = [
    {
      seq: 12,
      __timestamp__: '2026-12-06T16:05:03.5Z',
      action: 'audit.read',
      actor: 'bob',
      actor_kind: 'user',
      on_behalf_of: null,
      target: 'audit/records',
      owner: null,
      outcome: 'denied',
      reason: 'The audit trail is for hub admins.',
      client: '10.0.0.7',
      source: null,
      details: null,
      prev_hash: 'a',
      hash: 'b'
    },
    {
      seq: 11,
      __timestamp__: '2026-12-06T16:04:00Z',
      action: 'server.start',
      actor: 'root',
      actor_kind: 'user',
      on_behalf_of: null,
      target: 'server/alice',
      owner: 'alice',
      outcome: 'allowed',
      reason: null,
      client: '127.0.0.1',
      source: null,
      details: null,
      prev_hash: 'c',
      hash: 'a'
    }
  ];
  const audit = (changes: Partial<IAuditState>): IAuditState => ({
    ...INITIAL_AUDIT,
    admin: true,
    ...changes
  });

  it('lists records with time, actor, action, target, outcome and client; refusals marked', () => {
    const html = render({
      ...base,
      audit: audit({ status: 'ok', records, nextBefore: 11, updated: 1 })
    });
    expect(html).toContain('data-shipyard-section="audit"');
    expect(html).toMatch(
      /class="shipyard-item shipyard-audit-record shipyard-audit-denied" data-audit-seq="12" data-audit-action="audit.read" data-outcome="denied"/
    );
    expect(html).toContain('class="shipyard-status" data-status="denied">denied<');
    expect(html).toContain('The audit trail is for hub admins.');
    expect(html).toContain('from 10.0.0.7');
    expect(html).toMatch(
      /data-audit-seq="11" data-audit-action="server.start" data-outcome="allowed"/
    );
    expect(html).toContain('data-audit-actor="root">root<');
    expect(html).toContain('server/alice');
    expect(html).toContain('2026-12-06 16:04:00 UTC');
    // filters, verify, and the next page
    for (const name of ['user', 'action', 'since']) {
      expect(html).toContain(`name="shipyard-audit-${name}"`);
    }
    expect(html).toContain('<option value="server.start">');
    expect(html).toContain('data-action="audit-apply"');
    expect(html).toMatch(/data-action="audit-verify"[^>]*>Verify trail</);
    expect(html).toMatch(/data-action="audit-more"[^>]*>Load more</);
  });

  it('says what to do when there is nothing, and has no next page on the last', () => {
    const none = render({ ...base, audit: audit({ status: 'ok', records: [] }) });
    expect(none).toContain('No records yet');
    expect(none).not.toContain('audit-more');
    const filtered = render({
      ...base,
      audit: audit({ status: 'ok', filters: { user: 'bob', action: '', since: '' } })
    });
    expect(filtered).toContain('No records match these filters');
    expect(filtered).toContain('value="bob"');
  });

  it('shows the service’s message and what to do when it is down', () => {
    const html = render({
      ...base,
      audit: audit({
        status: 'error',
        error: 'Cannot reach the audit service at http://hub/services/audit (HTTP 503)',
        errorStatus: 502
      })
    });
    expect(html).toMatch(/role="alert">Cannot reach the audit service/);
    expect(html).toContain('SHIPYARD_AUDIT_SERVICE=0');
    const loading = render({ ...base, audit: audit({ status: 'idle' }) });
    expect(loading).toContain('Loading…');
  });

  it('shows the verdict: intact, or which record is broken', () => {
    const intact = render({
      ...base,
      audit: audit({
        status: 'ok',
        records,
        verify: {
          status: 'done',
          error: null,
          result: {
            ok: true,
            file_records: 12,
            table_records: 12,
            first_seq: 1,
            last_seq: 12,
            problems: []
          }
        }
      })
    });
    expect(intact).toMatch(/data-verify="ok"><div>Trail intact: 12 records \(seq 1–12\)/);
    const broken = render({
      ...base,
      audit: audit({
        status: 'ok',
        records,
        verify: {
          status: 'done',
          error: null,
          result: {
            ok: false,
            file_records: 12,
            table_records: 12,
            first_seq: 1,
            last_seq: 12,
            problems: [{ where: 'table', seq: 7, kind: 'edited', message: 'hash mismatch' }]
          }
        }
      })
    });
    expect(broken).toMatch(/role="alert" data-verify="broken"/);
    expect(broken).toContain('the first at seq 7 (edited, table)');
    expect(broken).toContain('<li>seq 7 (table): edited: hash mismatch</li>');
  });

  it('renders nothing of the section once the service refused', () => {
    const html = render({ ...base, audit: audit({ forbidden: true }) });
    expect(html).not.toContain('data-shipyard-section="audit"');
  });
});

// ------------------------------------------------------------------ pipelines

const PIPELINE = {
  id: 'p1',
  owner: 'alice',
  name: 'churn',
  description: 'Two steps.',
  source_path: 'churn/pipeline.yaml',
  digest: 'sha256:0',
  parameters: { rows: 4 },
  steps: [
    {
      id: 'ingest',
      type: 'notebook',
      notebook: 'ingest.ipynb',
      job_id: 'j1',
      needs: [],
      run_if: 'all_succeeded',
      profile: null
    },
    {
      id: 'train',
      type: 'notebook',
      notebook: 'train.ipynb',
      job_id: 'j2',
      needs: ['ingest'],
      run_if: 'all_succeeded',
      profile: null
    }
  ],
  triggers: [],
  paused: false,
  webhook_url: null,
  webhook_secret: null,
  next_fire_at: null,
  version: 1,
  created_at: '2026-01-01T00:00:00Z',
  updated_at: '2026-01-01T00:00:00Z'
} as IPipeline;

function pipelineStep(id: string, status: IPipelineStep['status'], runId: string | null) {
  return {
    step: id,
    status,
    run_id: runId,
    run_status: status === 'succeeded' ? 'succeeded' : runId ? 'running' : null,
    attempt: runId ? 1 : null,
    reason: status === 'failed' ? 'ValueError: broken' : '',
    outputs: {},
    files: {},
    started_at: runId ? '2026-01-01T00:00:00Z' : null,
    ended_at: status === 'succeeded' ? '2026-01-01T00:01:05Z' : null,
    duration_seconds: status === 'succeeded' ? 65 : null
  } as IPipelineStep;
}

function pipelineRun(status: IPipelineRun['status'], steps: IPipelineStep[]): IPipelineRun {
  return {
    id: 'abcdef0123456789',
    pipeline_id: 'p1',
    pipeline_name: 'churn',
    owner: 'alice',
    status,
    reason: status === 'failed' ? 'train failed' : '',
    parameters: {},
    repair_of: null,
    workspace: '/runs/w',
    created_at: '2026-01-01T00:00:00Z',
    ended_at: null,
    steps
  };
}

function withRun(run: IPipelineRun, extra: Partial<IPipelinesState> = {}): IPipelinesState {
  return {
    ...NO_PIPELINES,
    list: ok([PIPELINE]),
    selected: 'p1',
    runs: ok([run]),
    run: run.id,
    detail: ok(run),
    ...extra
  };
}

const EMPTY_SECTIONS = {
  profile: ok(profile),
  experiments: ok({ tracking_ui: null, runs: [] }),
  jobs: ok([]),
  deployments: ok([]),
  history: {},
  audit: INITIAL_AUDIT
};

describe('PanelView: the Pipelines section', () => {
  it('says how to add one when there are none', () => {
    const html = render(EMPTY_SECTIONS);
    expect(html).toContain('data-shipyard-section="pipelines"');
    expect(html).toContain('data-action="add-pipeline"');
    expect(html).toContain('No pipelines yet');
  });

  it('draws the run as a graph: a row per depth, an edge per need, each step with its state', () => {
    const run = pipelineRun('running', [
      pipelineStep('ingest', 'succeeded', 'r1'),
      pipelineStep('train', 'running', 'r2')
    ]);
    const html = render({ ...EMPTY_SECTIONS, pipelines: withRun(run) });
    expect(html).toContain('data-shipyard-pipeline="churn" data-selected="true"');
    expect(html).toContain('data-action="run-pipeline"');
    expect(html).toContain('data-shipyard-pipeline-run="abcdef0123456789" data-status="running"');
    expect(html).toContain('1 of 2 steps done, 1 running');
    // the nodes: ingest in row 0, train in row 1 below it, both at the same left, narrow
    // enough for two side by side in the sidebar
    expect(html).toMatch(
      /data-shipyard-step="ingest" data-status="succeeded" style="left:4px;top:4px;width:104px;height:92px"/
    );
    expect(html).toMatch(
      /data-shipyard-step="train" data-status="running" style="left:4px;top:124px/
    );
    expect(html).toContain('style="width:112px;height:220px"');
    // a long id is cut with an ellipsis: the whole id is its tooltip
    expect(html).toContain('<span class="shipyard-step-id" title="ingest">ingest</span>');
    expect(html).toContain('data-edge="ingest&gt;train"');
    expect(html).toMatch(
      /data-shipyard-step="ingest"[\s\S]*class="shipyard-status" data-status="succeeded">succeeded</
    );
    expect(html).toContain('1 min 5 s');
    // output and log of the step that ran; no output while it runs
    expect(html).toContain('href="/user/alice/shipyard/api/scheduler/runs/r1/output"');
    expect(html).not.toContain('runs/r2/output');
    expect(html.match(/data-action="step-logs"/g)).toHaveLength(2);
    // a running run: Cancel, not Repair
    expect(html).toContain('data-action="cancel-pipeline-run"');
    expect(html).not.toContain('data-action="repair-pipeline-run"');
  });

  it('offers Repair on a failed run, shows why, and shows a pending step without links', () => {
    const run = pipelineRun('failed', [
      pipelineStep('ingest', 'failed', 'r1'),
      pipelineStep('train', 'skipped', null)
    ]);
    const html = render({ ...EMPTY_SECTIONS, pipelines: withRun(run) });
    expect(html).toContain('data-action="repair-pipeline-run"');
    expect(html).not.toContain('data-action="cancel-pipeline-run"');
    expect(html).toContain('train failed');
    expect(html).toContain('title="ValueError: broken"');
    expect(html).toMatch(/data-shipyard-step="train" data-status="skipped"/);
    expect(html.match(/data-action="step-logs"/g)).toHaveLength(1);
  });

  it("shows an action's refusal and a run that could not be read, never a blank view", () => {
    const run = pipelineRun('running', [pipelineStep('ingest', 'running', 'r1')]);
    const html = render({
      ...EMPTY_SECTIONS,
      pipelines: withRun(run, {
        actionError: 'churn already has a run going',
        detail: { status: 'error', data: null, error: 'Cannot reach the scheduler', updated: 1 }
      })
    });
    expect(html).toMatch(/role="alert" data-shipyard-error="action">churn already has a run going/);
    expect(html).toContain('Cannot reach the scheduler');
  });
});

describe('the pipeline forms', () => {
  it('Add pipeline: the path input, and each file:line error of the refusal on its line', () => {
    const html = renderToStaticMarkup(
      <AddPipelineForm
        initial={{ path: 'bad/pipeline.yaml' }}
        errors={['bad/pipeline.yaml:4:5: nope is not a step', 'bad/pipeline.yaml:7:1: x']}
        onChange={noop}
      />
    );
    expect(html).toMatch(/name="shipyard-pipeline-path"[^>]*value="bad\/pipeline.yaml"/);
    expect(html).toContain('<div>bad/pipeline.yaml:4:5: nope is not a step</div>');
    expect(html).toContain('<div>bad/pipeline.yaml:7:1: x</div>');
  });

  it('Run: an input per declared parameter, as the jobs have', () => {
    const html = renderToStaticMarkup(
      <RunPipelineForm
        initial={{ params: { rows: '4', region: 'eu' } }}
        declared={{ rows: 4, region: 'eu' }}
        errors={[]}
        onChange={noop}
      />
    );
    expect(html).toMatch(/name="shipyard-param-rows" data-type="number"[^>]*value="4"/);
    expect(html).toMatch(/name="shipyard-param-region" data-type="string"[^>]*value="eu"/);
  });
});

describe("PanelView: a pipeline's triggers and pause", () => {
  const triggered = {
    ...PIPELINE,
    triggers: [
      { kind: 'cron', expression: '0 6 * * *', timezone: 'Europe/Paris' },
      { kind: 'file', glob: 'data/*.csv', debounce_seconds: 0.5 },
      { kind: 'webhook' }
    ],
    webhook_url: 'api/webhooks/j1'
  } as IPipeline;
  const selected = (pipeline: IPipeline, extra: Partial<IPipelinesState> = {}) =>
    render({
      ...EMPTY_SECTIONS,
      pipelines: {
        ...NO_PIPELINES,
        list: { status: 'ok', data: [pipeline], error: null, updated: 1 },
        selected: pipeline.id,
        runs: { status: 'ok', data: [], error: null, updated: 1 },
        ...extra
      }
    });

  it('shows a line per trigger and Pause while it is not paused', () => {
    const html = selected(triggered);
    expect(html).toContain('data-shipyard-trigger="cron">0 6 * * * (Europe/Paris)<');
    expect(html).toContain(
      'data-shipyard-trigger="file">new files matching data/*.csv, 0.5 s quiet<'
    );
    expect(html).toContain('data-shipyard-trigger="webhook">webhook: POST api/webhooks/j1<');
    expect(html).toContain('data-paused="false"');
    expect(html).not.toContain('data-shipyard-badge="paused"');
    expect(html).toMatch(/data-action="pause-pipeline" aria-pressed="false"[^>]*>Pause</);
  });

  it('shows the Paused badge and Resume when paused, and the refusal of the last action', () => {
    const html = selected(
      { ...triggered, paused: true },
      { actionError: 'Only alice can pause churn' }
    );
    expect(html).toContain('data-paused="true"');
    expect(html).toMatch(/data-shipyard-badge="paused"[^>]*>Paused</);
    expect(html).toMatch(/data-action="pause-pipeline" aria-pressed="true"[^>]*>Resume</);
    expect(html).toContain('Only alice can pause churn');
  });

  it('offers no Pause for a pipeline without triggers (runs start with Run only)', () => {
    const html = selected(PIPELINE);
    expect(html).toContain('No triggers: runs start with Run.');
    expect(html).not.toContain('data-action="pause-pipeline"');
  });
});

describe("LineageView: a version's chain in the Lineage dialog", () => {
  const sha = 'f'.repeat(64);
  it('shows each link, short digests with the full one in a title, and what is missing', () => {
    const html = renderToStaticMarkup(
      <LineageView
        lineage={{
          version: {
            owner: 'alice',
            name: 'iris',
            version: 2,
            model_uri: 'models:/iris/4',
            state: 'ready',
            created_at: '2026-12-07T10:00:00Z'
          },
          model_version: { name: 'iris', version: '4', run_id: null },
          mlflow_run: null,
          scheduler_run: null,
          pipeline_run: null,
          notebook: { path: 'iris/train.ipynb', digest: `sha256:${sha}`, parameters: {} },
          inputs: [{ path: 'data/iris.csv', sha256: sha, source: 'trigger' }],
          missing: [{ link: 'mlflow_run', reason: 'The registry names no run for iris 4.' }]
        }}
      />
    );
    expect(html).toContain('Version v2 of iris');
    expect(html).toContain('Registered model iris version 4');
    expect(html).toMatch(/data-link="mlflow_run" data-missing="true"/);
    expect(html).toContain('The registry names no run for iris 4.');
    expect(html).toContain(`title="sha256:${sha}"><code>sha256:ffffffffffff</code>`);
    expect(html).toContain(
      `title="${sha} (a file that started the run)"><code>ffffffffffff</code>`
    );
    expect(html).toMatch(/data-link="missing".*MLflow run: The registry names no run for iris 4\./);
  });
});

describe('Schedule pipeline: the dialog after the scheduler answered', () => {
  it('lists the steps in run order and says there are no triggers', () => {
    const html = renderToStaticMarkup(
      <ScheduledPipelineView pipeline={PIPELINE} updated={false} path="churn/pipeline.yaml" />
    );
    expect(html).toContain('data-shipyard-pipeline="churn"');
    expect(html).toContain('<code>churn/pipeline.yaml</code>');
    expect(html).toMatch(
      /<li><code>ingest: ingest.ipynb<\/code><\/li><li><code>train: train.ipynb, after ingest<\/code>/
    );
    expect(html).toContain('It has no triggers: start its runs with Run in the Shipyard panel.');
  });

  it("shows each of the refusal's file:line errors on a line of its own", () => {
    const html = renderToStaticMarkup(
      <PipelineRefusalView
        message={
          "churn/pipeline.yaml:3:5: steps.train.needs: unknown step 'x'\n\nchurn/pipeline.yaml:9:1: name: required"
        }
      />
    );
    expect(html.match(/<li>/g)).toHaveLength(2);
    expect(html).toContain('churn/pipeline.yaml:9:1: name: required');
    expect(html).toContain('role="alert"');
  });
});

describe('the Usage section', () => {
  const base = {
    profile: ok(profile),
    experiments: ok({ tracking_ui: null, runs: [] }),
    jobs: ok([]),
    deployments: ok([]),
    history: {},
    audit: INITIAL_AUDIT
  };
  const row = (key: string, cpu: number, cost = cpu / 2): IUsageRow => ({
    key,
    cpu_seconds: cpu * 3600,
    cpu_hours: cpu,
    mem_gib_hours: cpu * 2,
    gpu_hours: 0,
    wall_hours: cpu,
    cost
  });
  const usage = (changes: Partial<IUsageState>): IUsageState => ({
    ...INITIAL_USAGE,
    status: 'ok',
    updated: 1,
    mine: {
      currency: 'EUR',
      days: [row('2026-12-05', 0), row('2026-12-06', 1.5), row('2026-12-07', 0.25)],
      byKind: [row('server', 1.5), row('run', 0.25)],
      byProfile: [row('small', 1.75)]
    },
    ...changes
  });

  it('is not shown, nor the Alerts section, where the hub runs neither service', () => {
    const without = { ...profile, services: { usage: false, alerts: false } };
    const html = render({ ...base, profile: ok(without), usage: usage({}) });
    expect(html).not.toContain('data-shipyard-section="usage"');
    expect(html).not.toContain('data-shipyard-section="alerts"');
    const withUsage = { ...profile, services: { usage: true, alerts: false } };
    expect(render({ ...base, profile: ok(withUsage), usage: usage({}) })).toContain(
      'data-shipyard-section="usage"'
    );
  });

  it("shows the user's totals, a bar a day, and the breakdown by kind and profile", () => {
    const html = render({ ...base, usage: usage({}) });
    expect(html).toContain('data-shipyard-section="usage"');
    expect(html).toContain('Usage, last 30 days');
    expect(html).toMatch(/data-usage-total="cpu_hours"><dt>CPU-hours<\/dt><dd>1\.75 h<\/dd>/);
    expect(html).toMatch(/data-usage-total="cost"><dt>Cost<\/dt><dd>0\.88 EUR<\/dd>/);
    expect(html.match(/<rect class="shipyard-usage-bar"/g)).toHaveLength(3);
    expect(html).toContain('<title>Dec 6: 1.5 h</title>');
    expect(html).toContain('max 1.5 h a day');
    expect(html).toContain('data-usage-table="kind"');
    // the cells are numbers; the header says the unit (narrow sidebar)
    expect(html).toContain(
      '<tr data-usage-key="server"><th scope="row" title="server">server</th>' +
        '<td>1.5</td><td>3</td><td>0</td><td>0.75</td></tr>'
    );
    expect(html).toContain('CPU<span class="shipyard-usage-unit">h</span>');
    expect(html).toContain('Cost<span class="shipyard-usage-unit">EUR</span>');
    expect(html).toContain('data-usage-table="profile"');
    expect(html).not.toContain('data-usage-platform');
  });

  it('plots the metric chosen and says when there is nothing to plot', () => {
    const html = render({ ...base, usage: usage({ metric: 'gpu_hours' }) });
    expect(html).toContain(
      '<figure class="shipyard-chart shipyard-usage-chart" data-metric="gpu_hours"'
    );
    expect(html).toContain('no GPU-hours yet');
    expect(html).toMatch(
      /data-metric="gpu_hours" aria-pressed="true"|aria-pressed="true"[^>]*data-metric="gpu_hours"/
    );
  });

  it('shows the platform to admins: users, profiles, waste; its error apart', () => {
    const platform = {
      currency: 'EUR',
      byUser: [row('alice', 1.75), row('bob', 0.5)],
      byProfile: [row('small', 2.25)],
      waste: {
        days: 7,
        idle: [
          {
            owner: 'bob',
            object: 'server/bob/',
            profile: 'gpu',
            gpus: 1,
            mem_bytes: 0,
            idle_hours: 3,
            message: 'server/bob/ (gpu) has been idle for 3 h holding 1 GPU: stop it'
          }
        ],
        rightsizing: []
      }
    };
    const html = render({ ...base, usage: usage({ platform }) });
    expect(html).toContain('data-usage-platform="ok"');
    expect(html).toContain('data-usage-table="users"');
    expect(html).toContain('data-usage-key="bob"');
    expect(html).toContain('data-usage-table="platform-profiles"');
    expect(html).toContain('data-usage-waste="idle" data-owner="bob"');
    expect(html).toContain('has been idle for 3 h holding 1 GPU: stop it');

    const failed = render({ ...base, usage: usage({ platformError: 'usage service down' }) });
    expect(failed).toContain('Platform usage could not be read: usage service down');
    expect(failed).toContain('data-usage-table="kind"');
  });

  it('says loading before the first answer, and keeps the data under an error', () => {
    expect(render({ ...base, usage: INITIAL_USAGE })).toMatch(
      /data-shipyard-section="usage" data-state="loading"/
    );
    const html = render({
      ...base,
      usage: usage({ status: 'error', error: 'The usage service is not running' })
    });
    expect(html).toContain('The usage service is not running');
    expect(html).toContain('data-usage-table="kind"');
  });
});

describe('the Alerts section', () => {
  const base = {
    profile: ok(profile),
    experiments: ok({ tracking_ui: null, runs: [] }),
    jobs: ok([]),
    deployments: ok([]),
    history: {},
    audit: INITIAL_AUDIT
  };
  const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
  const alert = (id: string, changes: Partial<IAlert> = {}): IAlert => ({
    id,
    key: `model_error_rate{deployment=churn,version=3}`,
    rule: 'model_error_rate',
    owner: 'alice',
    labels: { deployment: 'churn', version: '3' },
    severity: 'critical',
    summary: 'Model alice/churn version 3: 12% of 50 requests failed in the last minute.',
    value: 0.12,
    state: 'firing',
    pending_since: ago(20),
    started_at: ago(15),
    resolved_at: null,
    ...changes
  });
  const alerts = (changes: Partial<IAlertsState>): IAlertsState => ({
    ...INITIAL_ALERTS,
    status: 'ok',
    updated: 1,
    ...changes
  });

  it('lists firing alerts with rule, subject, since when, severity and figure; resolved apart', () => {
    const html = render({
      ...base,
      alerts: alerts({
        open: [alert('f1')],
        resolved: [
          alert('r1', {
            rule: 'job_failed',
            labels: { job: 'nightly', job_id: 'abc' },
            severity: '',
            value: null,
            summary: 'Job alice/nightly: its latest run failed.',
            state: 'resolved',
            resolved_at: ago(90)
          })
        ]
      })
    });
    expect(html).toContain('Alerts (1 firing)');
    const open = html.slice(
      html.indexOf('data-alerts="open"'),
      html.indexOf('data-alerts="resolved"')
    );
    expect(open).toContain(
      'data-alert="f1" data-alert-state="firing" data-rule="model_error_rate"'
    );
    expect(open).toContain('<strong class="shipyard-alert-rule">Model error rate</strong>');
    expect(open).toContain('model churn, version 3');
    expect(open).toContain('data-severity="critical"');
    expect(open).toContain('12% of requests failed');
    expect(open).toContain('firing 15 min ago');
    expect(open).toContain('12% of 50 requests failed in the last minute');
    const resolved = html.slice(html.indexOf('data-alerts="resolved"'));
    expect(html).toContain('Resolved lately');
    expect(resolved).toContain('data-alert="r1" data-alert-state="resolved"');
    expect(resolved).toContain('job nightly');
    expect(resolved).toContain('resolved 1 h 30 min ago');
    expect(resolved).not.toMatch(/data-alert="r1"[^]*data-severity/);
    // all the user's own: no owner named
    expect(html).not.toContain('shipyard-alert-owner');
    // the section is placed under the profile, above the work sections
    expect(html.indexOf('data-shipyard-section="alerts"')).toBeLessThan(
      html.indexOf('data-shipyard-section="jobs"')
    );
  });

  it("names each alert's owner in an admin's list, and the platform's", () => {
    const html = render({
      ...base,
      profile: ok({ ...profile, admin: true }),
      alerts: alerts({
        open: [
          alert('b', { owner: 'bob' }),
          alert('d', { owner: null, rule: 'disk_full', labels: { path: '/srv' }, value: 95 })
        ]
      })
    });
    expect(html).toContain('about bob');
    expect(html).toContain('<span class="shipyard-alert-owner">platform</span>');
    expect(html).toContain('disk /srv');
    expect(html).toContain('95% full');
  });

  it('says what is watched when there is no alert, and admins what else they see', () => {
    const html = render({ ...base, alerts: alerts({}) });
    expect(html).toMatch(/data-shipyard-section="alerts" data-state="ok"/);
    expect(html).toContain('No alerts.');
    expect(html).toContain('error rate, latency and drift');
    expect(html).toContain(
      'missed schedules, servers holding GPUs idle and your quota nearly used up are watched'
    );
    expect(html).not.toContain('As an admin');
    const admin = render({ ...base, profile: ok({ ...profile, admin: true }), alerts: alerts({}) });
    expect(admin).toContain(
      'As an admin you also see everyone&#x27;s alerts, the groups&#x27; run quotas and the data disk'
    );
  });

  it('says loading before the first answer, and keeps the alerts under an error', () => {
    expect(render({ ...base })).toMatch(/data-shipyard-section="alerts" data-state="loading"/);
    const html = render({
      ...base,
      alerts: alerts({
        status: 'error',
        error: 'Cannot reach the alerts service',
        open: [alert('f1')]
      })
    });
    expect(html).toContain('Cannot reach the alerts service');
    expect(html).toContain('data-alert="f1"');
    expect(html).not.toContain('No alerts.');
  });

  describe('the notification targets', () => {
    const targets = (changes: Partial<ITargetsState>): ITargetsState => ({
      ...INITIAL_TARGETS,
      status: 'ok',
      schemes: ['mailto', 'json', 'slack'],
      ...changes
    });
    const box = (html: string) => html.slice(html.indexOf('data-targets="box"'));

    it('lists the targets as the service redacts them, with the schemes allowed', () => {
      const html = box(
        render({
          ...base,
          alerts: alerts({}),
          alertTargets: targets({ targets: ['json://hooks.example.org/…', 'slack://…'] })
        })
      );
      expect(html).toContain('Notify me at');
      expect(html).toContain('data-target="json://hooks.example.org/…"');
      expect(html).toContain('data-target="slack://…"');
      expect(html).toMatch(
        /data-targets="schemes"[^>]*>Allowed here: mailto:\/\/, json:\/\/, slack:\/\/\./
      );
      expect(html).toContain('Saving replaces the targets above');
      expect(html).toContain('name="shipyard-alert-targets"');
      expect(html).toContain('placeholder="jsons://hooks.example.org/alerts"');
      expect(html).toContain('data-action="targets-clear"');
      // nothing typed yet: nothing to save
      expect(html).toMatch(/data-action="targets-save" disabled=""/);
      expect(html).not.toContain('data-targets="error"');
    });

    it('says there are none, and offers no removal', () => {
      const html = box(render({ ...base, alerts: alerts({}), alertTargets: targets({}) }));
      expect(html).toContain('data-targets="none"');
      expect(html).toContain('No targets: your alerts show only here.');
      expect(html).not.toContain('data-action="targets-clear"');
      expect(html).not.toContain('Saving replaces');
    });

    it("shows the service's refusal next to the field", () => {
      const html = box(
        render({
          ...base,
          alerts: alerts({}),
          alertTargets: targets({
            targets: ['slack://…'],
            saveError: "URL 1: the scheme 'ftp' is not one users may use here"
          })
        })
      );
      const field = html.indexOf('name="shipyard-alert-targets"');
      const error = html.indexOf('data-targets="error"');
      expect(field).toBeGreaterThan(-1);
      expect(error).toBeGreaterThan(field);
      expect(error).toBeLessThan(html.indexOf('data-targets="schemes"'));
      expect(html).toContain('aria-invalid="true"');
      expect(html).toContain('URL 1: the scheme &#x27;ftp&#x27; is not one users may use here');
      // the targets the refused save would have replaced are still listed
      expect(html).toContain('data-target="slack://…"');
    });

    it('says loading first, and why a load failed, keeping what it showed', () => {
      const loading = box(render({ ...base, alerts: alerts({}) }));
      expect(loading).toContain('Loading…');
      expect(loading).not.toContain('data-targets="schemes"');
      const failed = box(
        render({
          ...base,
          alerts: alerts({}),
          alertTargets: targets({
            status: 'error',
            error: 'Cannot reach the alerts service',
            targets: ['slack://…']
          })
        })
      );
      expect(failed).toContain('data-targets="load-error"');
      expect(failed).toContain('Cannot reach the alerts service');
      expect(failed).toContain('data-target="slack://…"');
      const never = box(
        render({
          ...base,
          alerts: alerts({}),
          alertTargets: { ...INITIAL_TARGETS, status: 'error', error: 'down' }
        })
      );
      // no answer yet: no hint that would say no scheme is allowed
      expect(never).not.toContain('data-targets="schemes"');
      expect(never).not.toContain('data-targets="none"');
    });

    it('says saving while a save is on its way', () => {
      const html = box(
        render({ ...base, alerts: alerts({}), alertTargets: targets({ saving: true }) })
      );
      expect(html).toContain('Saving…');
    });
  });
});
