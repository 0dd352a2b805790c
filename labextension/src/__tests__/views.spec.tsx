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
  IRun,
  ISchedulerParameter,
  IServerProfile
} from '../api/types';
import { DeployForm, IDeployFormProps } from '../dialogs/deployForm';
import type { IFormValues } from '../dialogs/fields';
import { IScheduleFieldsProps, ScheduleFields, ScheduleForm } from '../dialogs/scheduleForm';
import { IAuditState, INITIAL_AUDIT } from '../logic/audit';
import type { IScheduleValues } from '../logic/forms';
import { jobRows, pushSample } from '../logic/state';
import type { IPanelState, ISection, ShipyardModel } from '../panel/model';
import { IPanelActions, PanelView } from '../panel/views';

const noop = () => undefined;
const actions: IPanelActions = {
  refresh: noop,
  runNow: noop,
  togglePause: noop,
  downloadOutput: noop,
  showLogs: noop,
  rollback: noop,
  outputHref: run => `/user/alice/shipyard/api/scheduler/runs/${run.id}/output`,
  auditFilter: noop,
  auditMore: noop,
  auditVerify: noop
};

function ok<T>(data: T): ISection<T> {
  return { status: 'ok', data, error: null, updated: 1 };
}

function render(state: IPanelState): HTMLString {
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
    field: key => ({ value: values[key] as string, onChange: noop })
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
