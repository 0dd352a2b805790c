/**
 * The panel's React views: five sections rendered from :class:`ShipyardModel`'s state, and
 * the Audit section for hub admins (nothing of it is rendered for anyone else).
 *
 * Stable hooks for tests and users' own styles: every section is an element with
 * ``data-shipyard-section``; jobs, deployments and pipelines carry their name in
 * ``data-shipyard-job`` / ``data-shipyard-deployment`` / ``data-shipyard-pipeline``; a
 * pipeline run carries its id in ``data-shipyard-pipeline-run`` and its status in
 * ``data-status``, each step node its id in ``data-shipyard-step`` and its state in
 * ``data-status``, each edge ``data-edge="need>step"``; a pipeline's triggers are lines
 * with ``data-shipyard-trigger`` (the kind), a paused pipeline has ``data-paused="true"``
 * and a ``data-shipyard-badge="paused"`` badge; buttons and links carry
 * ``data-action``; statuses are ``.shipyard-status[data-status]``; audit records carry
 * ``data-audit-seq``, ``data-audit-action`` and ``data-outcome``, the verification's
 * result ``data-verify`` (``ok`` or ``broken``); the Usage section's totals carry
 * ``data-usage-total`` (the metric), its plot ``data-metric`` and a ``rect[data-day]`` a day,
 * its tables ``data-usage-table`` (``kind``, ``profile``, ``users``, ``platform-profiles``)
 * with a ``data-usage-key`` a row, its admin part ``data-usage-platform``; the Alerts
 * section's alerts carry ``data-alert`` (the id), ``data-alert-state`` and ``data-rule``,
 * its two lists ``data-alerts`` (``open``, ``resolved``), its notification targets
 * ``data-targets`` (the box), each listed one ``data-target`` (as the service redacts it),
 * the field's hint ``data-targets="schemes"`` and the service's refusal
 * ``data-targets="error"``.
 */
import * as React from 'react';

import type {
  IAlert,
  IAuditRecord,
  IExperimentRun,
  IJob,
  IPipeline,
  IPipelineRun,
  IPipelineStep,
  IRun,
  IServerProfile,
  IUsageRow
} from '../api/types';
import {
  alertAbout,
  alertFigure,
  alertSince,
  IAlertsState,
  ruleLabel,
  showOwners,
  WATCHED,
  WATCHED_ADMIN
} from '../logic/alerts';
import {
  actionSuggestions,
  auditVisible,
  describeActor,
  emptyMessage,
  errorAdvice,
  formatAuditTime,
  IAuditFilters,
  IAuditState,
  isDenied,
  NO_FILTERS,
  verifySummary
} from '../logic/audit';
import { formatInZone } from '../logic/cron';
import {
  formatAgo,
  formatBytes,
  formatCores,
  formatDuration,
  formatLatency,
  formatMetric,
  formatPercent,
  formatRate,
  formatRatio,
  secondsBetween,
  shortDigest,
  statusLabel
} from '../logic/format';
import {
  canCancel,
  canRepair,
  layoutGraph,
  pipelineTriggerLines,
  shortRunId,
  stepCounts,
  stepDuration
} from '../logic/pipelines';
import { describeTriggers, IJobRow, liveVersion, versionRows } from '../logic/state';
import {
  ITargetsState,
  NO_TARGETS,
  parseTargets,
  schemesHint,
  TARGET_EXAMPLE,
  targetsLoaded
} from '../logic/targets';
import {
  formatUsage,
  IMyUsage,
  IPlatformUsage,
  IUsageState,
  USAGE_DAYS,
  USAGE_METRICS,
  UsageMetric,
  usageTotals,
  usageUnit
} from '../logic/usage';
import { MetricsChart, UsageChart } from './chart';
import type { IDeploymentState, IPipelinesState, ISection, ShipyardModel } from './model';

/** What the views ask the widget to do (dialogs, notifications and downloads are its). */
export interface IPanelActions {
  refresh(): void;
  runNow(job: IJob): void;
  togglePause(job: IJob): void;
  downloadOutput(run: IRun, job: IJob): void;
  showLogs(run: IRun, job: IJob): void;
  rollback(state: IDeploymentState): void;
  /** Show where version ``version`` of a deployment came from. */
  showLineage(deployment: string, version: number): void;
  outputHref(run: IRun): string;
  /** Show the newest audit records matching ``filters``. */
  auditFilter(filters: IAuditFilters): void;
  /** Show the next (older) page of audit records. */
  auditMore(): void;
  /** Check the audit trail's hash chain. */
  auditVerify(): void;
  /** Plot another metric in the Usage section. */
  usageMetric(metric: UsageMetric): void;
  /** Replace the user's notification targets with ``urls`` (none: remove them all). */
  saveTargets(urls: string[]): void;
  /** Ask for a pipeline.yaml's path and add it. */
  addPipeline(): void;
  /** Show a pipeline's runs (null: none). */
  selectPipeline(pipelineId: string | null): void;
  /** Show a run of the selected pipeline as a graph. */
  selectPipelineRun(runId: string): void;
  /** Start a run (asking for the parameters the pipeline declares first). */
  runPipeline(pipeline: IPipeline): void;
  repairPipelineRun(run: IPipelineRun): void;
  cancelPipelineRun(run: IPipelineRun): void;
  /** Pause the pipeline's triggers, or resume them. */
  togglePipelinePause(pipeline: IPipeline): void;
  /** A step's run log, and its output notebook (download and ``href``). */
  showStepLog(step: IPipelineStep, run: IPipelineRun): void;
  downloadStepOutput(step: IPipelineStep, run: IPipelineRun): void;
  stepOutputHref(step: IPipelineStep): string;
}

/** Re-render on every change of the model. */
function useModel(model: ShipyardModel): void {
  const [, setTick] = React.useState(0);
  React.useEffect(() => {
    const update = () => setTick(t => t + 1);
    model.changed.connect(update);
    return () => {
      model.changed.disconnect(update);
    };
  }, [model]);
}

export function PanelView(props: {
  model: ShipyardModel;
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { model, actions, busy } = props;
  useModel(model);
  const state = model.state;
  return (
    <div className="shipyard-panel-body">
      <header className="shipyard-panel-header">
        <h2>Shipyard</h2>
        <button
          className="jp-Button shipyard-icon-button"
          data-action="refresh"
          title="Refresh now (the panel refreshes every 5 s while it is open)"
          onClick={() => actions.refresh()}
        >
          ⟳<span className="shipyard-sr-only">Refresh</span>
        </button>
      </header>
      <ProfileSection section={state.profile} />
      {serviceHere(state.profile.data, 'alerts') ? (
        <AlertsSection
          alerts={state.alerts}
          targets={state.alertTargets}
          profile={state.profile.data}
          actions={actions}
        />
      ) : null}
      <ExperimentsSection section={state.experiments} />
      <JobsSection section={state.jobs} actions={actions} busy={busy} />
      <PipelinesSection state={state.pipelines} actions={actions} busy={busy} />
      <DeploymentsSection
        section={state.deployments}
        history={state.history}
        actions={actions}
        busy={busy}
      />
      {serviceHere(state.profile.data, 'usage') ? (
        <UsageSection usage={state.usage} actions={actions} />
      ) : null}
      {auditVisible(state.audit) ? <AuditSection audit={state.audit} actions={actions} /> : null}
    </div>
  );
}

function SectionFrame(props: {
  name: string;
  title: string;
  section: ISection<unknown>;
  children?: React.ReactNode;
  extra?: React.ReactNode;
}): React.ReactElement {
  const { name, title, section } = props;
  return (
    <section
      className="shipyard-section"
      data-shipyard-section={name}
      data-state={section.status}
      aria-busy={section.status === 'loading'}
    >
      <h3 className="shipyard-section-title">
        {title}
        {props.extra}
      </h3>
      {section.status === 'error' && section.error ? (
        <div className="shipyard-error" role="alert">
          {section.error}
        </div>
      ) : null}
      {section.status === 'loading' ? <div className="shipyard-loading">Loading…</div> : null}
      <SectionBoundary>{props.children}</SectionBoundary>
    </section>
  );
}

/** A section that fails to render says so instead of blanking the whole panel. */
class SectionBoundary extends React.Component<
  { children?: React.ReactNode },
  { error: string | null }
> {
  state = { error: null as string | null };

  static getDerivedStateFromError(error: unknown): { error: string } {
    return { error: error instanceof Error ? error.message : String(error) };
  }

  render(): React.ReactNode {
    if (this.state.error) {
      return (
        <div className="shipyard-error" role="alert">
          This section could not be shown: {this.state.error}
        </div>
      );
    }
    return this.props.children;
  }
}

function Empty(props: { children: React.ReactNode }): React.ReactElement {
  return <div className="shipyard-empty">{props.children}</div>;
}

/**
 * ``items`` as a ``ul.shipyard-list``, or ``empty`` where there are none; nothing while
 * they are not known.
 */
function ItemList<T>(props: {
  items: T[] | null | undefined;
  className: string;
  empty: React.ReactNode;
  render: (item: T) => React.ReactElement;
}): React.ReactElement | null {
  const { items } = props;
  if (!items) {
    return null;
  }
  return items.length ? (
    <ul className={`shipyard-list ${props.className}`}>{items.map(item => props.render(item))}</ul>
  ) : (
    <Empty>{props.empty}</Empty>
  );
}

// ------------------------------------------------------------------ profile

function ProfileSection(props: { section: ISection<IServerProfile> }): React.ReactElement {
  const { section } = props;
  const p = section.data;
  return (
    <SectionFrame name="profile" title="Profile" section={section}>
      {p ? <ProfileBody profile={p} /> : null}
    </SectionFrame>
  );
}

function ProfileBody(props: { profile: IServerProfile }): React.ReactElement {
  const p = props.profile;
  const limits = p.limits;
  const gpus = limits.gpus !== null ? limits.gpus.length : (p.profile?.gpu ?? 0);
  const memLimit = limits.mem_limit ?? p.enforced?.mem_limit ?? null;
  const cpuLimit = limits.cpu_limit ?? p.enforced?.cpu_limit ?? null;
  const memUsed = p.usage?.mem_bytes ?? p.enforced?.mem_usage ?? null;
  const cpuPercent = p.usage?.cpu_percent ?? null;
  return (
    <div className="shipyard-profile">
      <div className="shipyard-profile-name" data-profile={p.profile?.slug ?? ''}>
        {p.profile ? (
          <>
            <strong>{p.profile.display_name || p.profile.slug}</strong>{' '}
            <code className="shipyard-muted">{p.profile.slug}</code>
          </>
        ) : (
          <span className="shipyard-muted">
            No Shipyard profile: this server was not started by the hub's profile spawner.
          </span>
        )}
      </div>
      <dl className="shipyard-facts">
        <dt>CPU</dt>
        <dd data-shipyard-limit="cpu">
          {cpuLimit !== null ? formatCores(cpuLimit) : 'no limit'}
          {limits.cpu_guarantee ? ` (${formatCores(limits.cpu_guarantee)} guaranteed)` : ''}
        </dd>
        <dt>Memory</dt>
        <dd data-shipyard-limit="memory">
          {memLimit !== null ? formatBytes(memLimit) : 'no limit'}
          {limits.mem_guarantee ? ` (${formatBytes(limits.mem_guarantee)} guaranteed)` : ''}
        </dd>
        <dt>GPU</dt>
        <dd data-shipyard-limit="gpu">
          {gpus ? `${gpus}${limits.gpus?.length ? ` (${limits.gpus.join(', ')})` : ''}` : 'none'}
        </dd>
        <dt>Environment</dt>
        <dd data-shipyard-environment={p.environment.name ?? ''}>
          {p.environment.name ?? <span className="shipyard-muted">not a Shipyard environment</span>}{' '}
          {p.environment.digest ? (
            <code className="shipyard-muted" title={p.environment.digest}>
              {shortDigest(p.environment.digest)}
            </code>
          ) : null}
          <span className="shipyard-muted"> · Python {p.environment.python_version}</span>
        </dd>
      </dl>
      <div className="shipyard-usage">
        <Meter
          name="cpu"
          label="CPU use"
          value={cpuPercent}
          max={cpuLimit ? cpuLimit * 100 : null}
          text={
            cpuPercent === null
              ? '–'
              : `${formatPercent(cpuPercent)}${cpuLimit ? ` of ${formatPercent(cpuLimit * 100, 0)}` : ''}`
          }
        />
        <Meter
          name="memory"
          label="Memory use"
          value={memUsed}
          max={memLimit}
          text={
            memUsed === null
              ? '–'
              : `${formatBytes(memUsed)}${memLimit ? ` of ${formatBytes(memLimit)}` : ''}`
          }
        />
      </div>
    </div>
  );
}

function Meter(props: {
  name: string;
  label: string;
  value: number | null;
  max: number | null;
  text: string;
}): React.ReactElement {
  const { value, max } = props;
  return (
    <div className="shipyard-meter" data-shipyard-usage={props.name}>
      <span className="shipyard-meter-label">{props.label}</span>
      {value !== null && max ? (
        <meter
          min={0}
          max={max}
          low={max * 0.7}
          high={max * 0.9}
          optimum={0}
          value={Math.min(value, max)}
        />
      ) : null}
      <span className="shipyard-meter-text">{props.text}</span>
    </div>
  );
}

// ------------------------------------------------------------------ experiments

function ExperimentsSection(props: {
  section: ISection<{ tracking_ui: string | null; runs: IExperimentRun[] }>;
}): React.ReactElement {
  const { section } = props;
  const data = section.data;
  const link = data?.tracking_ui ? (
    <a
      className="shipyard-link shipyard-title-link"
      data-action="open-mlflow"
      href={data.tracking_ui}
      target="_blank"
      rel="noopener noreferrer"
    >
      Open MLflow
    </a>
  ) : null;
  return (
    <SectionFrame name="experiments" title="Experiments" section={section} extra={link}>
      {section.status === 'unavailable' ? <Empty>{section.error}</Empty> : null}
      <ItemList
        items={data?.runs}
        className="shipyard-runs"
        empty={
          <>
            No runs yet: track one with <code>%%track</code> in a notebook cell (and{' '}
            <code>%experiment NAME</code> to choose the experiment).
          </>
        }
        render={run => <ExperimentRunItem key={run.run_id} run={run} />}
      />
    </SectionFrame>
  );
}

function ExperimentRunItem(props: { run: IExperimentRun }): React.ReactElement {
  const { run } = props;
  const metrics = Object.entries(run.metrics ?? {}).slice(0, 4);
  const name = run.run_name || run.run_id.slice(0, 8);
  return (
    <li className="shipyard-item" data-shipyard-run={run.run_id}>
      <div className="shipyard-item-head">
        {run.url ? (
          <a
            className="shipyard-link"
            data-action="open-run"
            href={run.url}
            target="_blank"
            rel="noopener noreferrer"
          >
            {name}
          </a>
        ) : (
          <span>{name}</span>
        )}
        <Status status={(run.status ?? 'unknown').toLowerCase()} />
      </div>
      <div className="shipyard-item-meta">
        {run.experiment_name ?? run.experiment_id}
        {run.start_time ? ` · ${formatAgo(run.start_time)}` : ''}
      </div>
      {metrics.length ? (
        <div className="shipyard-metrics">
          {metrics.map(([key, value]) => (
            <span key={key} className="shipyard-metric" data-metric={key}>
              {key} <strong>{formatMetric(value)}</strong>
            </span>
          ))}
        </div>
      ) : null}
    </li>
  );
}

function Status(props: { status: string }): React.ReactElement {
  return (
    <span className="shipyard-status" data-status={props.status}>
      {props.status === 'none' ? 'never run' : statusLabel(props.status)}
    </span>
  );
}

// ------------------------------------------------------------------ jobs

function JobsSection(props: {
  section: ISection<IJobRow[]>;
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { section, actions, busy } = props;
  return (
    <SectionFrame name="jobs" title="Scheduled jobs" section={section}>
      <ItemList
        items={section.data}
        className="shipyard-jobs"
        empty={
          <>
            No jobs yet: use <strong>Schedule…</strong> in a notebook's toolbar or{' '}
            <code>%schedule "0 6 * * *"</code> in a cell.
          </>
        }
        render={row => <JobItem key={row.job.id} row={row} actions={actions} busy={busy} />}
      />
    </SectionFrame>
  );
}

/** A ``.shipyard-link[data-action]`` that runs ``onClick`` in place of following ``href``. */
function ActionLink(props: {
  action: string;
  href: string;
  onClick: () => void;
  children: React.ReactNode;
}): React.ReactElement {
  return (
    <a
      className="shipyard-link"
      data-action={props.action}
      href={props.href}
      onClick={event => {
        event.preventDefault();
        props.onClick();
      }}
    >
      {props.children}
    </a>
  );
}

function JobItem(props: {
  row: IJobRow;
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { row, actions, busy } = props;
  const { job, latest, next, progress } = row;
  const readOnly = job.read_only;
  const hasOutput = latest && latest.output_path && !latest.outputs_deleted_at;
  return (
    <li
      className="shipyard-item shipyard-job"
      data-shipyard-job={job.name}
      data-paused={job.paused ? 'true' : 'false'}
    >
      <div className="shipyard-item-head">
        <span className="shipyard-item-name" title={job.source_path ?? undefined}>
          {job.name}
        </span>
        {job.paused ? <span className="shipyard-badge">paused</span> : null}
        {readOnly ? (
          <span className="shipyard-badge" title={`shared by ${job.owner}`}>
            shared
          </span>
        ) : null}
        <Status status={row.status} />
      </div>
      <div className="shipyard-item-meta">{describeTriggers(job)}</div>
      <div className="shipyard-next-run" data-next-run={next?.at ?? ''}>
        {job.paused
          ? 'Paused: resume it to run again.'
          : next
            ? `Next run: ${formatInZone(next.at, next.timezone)}`
            : 'No scheduled run.'}
      </div>
      {latest ? (
        <div className="shipyard-last-run" data-run-id={latest.id}>
          Last run {formatAgo(latest.started_at ?? latest.queued_at)}
          {latest.started_at
            ? `, ${latest.ended_at ? 'took' : 'running for'} ${formatDuration(
                secondsBetween(latest.started_at, latest.ended_at)
              )}`
            : ''}
          {latest.reason && latest.status !== 'succeeded' ? (
            <div className="shipyard-reason">{latest.reason}</div>
          ) : null}
          {progress ? (
            <div className="shipyard-progress-row">
              <progress
                className="shipyard-progress"
                max={progress.total}
                value={progress.done}
                aria-label={`${progress.done} of ${progress.total} cells`}
              />
              <span className="shipyard-progress-text">
                {progress.done}/{progress.total} cells
              </span>
            </div>
          ) : null}
          <div className="shipyard-links">
            {hasOutput ? (
              <ActionLink
                action="output"
                href={actions.outputHref(latest)}
                onClick={() => actions.downloadOutput(latest, job)}
              >
                Output
              </ActionLink>
            ) : null}
            {latest.log_path || latest.status === 'running' || latest.status === 'queued' ? (
              <ActionLink action="logs" href="#" onClick={() => actions.showLogs(latest, job)}>
                Logs
              </ActionLink>
            ) : null}
          </div>
        </div>
      ) : null}
      <div className="shipyard-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept shipyard-button"
          data-action="run-now"
          disabled={readOnly || busy.has(`run:${job.id}`)}
          title={readOnly ? `Only ${job.owner} can run this job` : 'Queue a run now'}
          onClick={() => actions.runNow(job)}
        >
          Run now
        </button>
        <button
          className="jp-Button jp-mod-styled shipyard-button"
          data-action="pause"
          aria-pressed={job.paused}
          disabled={readOnly || busy.has(`pause:${job.id}`)}
          title={
            job.paused ? 'Resume: run on schedule again' : 'Pause: no scheduled runs until resumed'
          }
          onClick={() => actions.togglePause(job)}
        >
          {job.paused ? 'Resume' : 'Pause'}
        </button>
      </div>
    </li>
  );
}

// ------------------------------------------------------------------ pipelines

function PipelinesSection(props: {
  state: IPipelinesState;
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { state, actions, busy } = props;
  const add = (
    <button
      className="jp-Button jp-mod-styled shipyard-button shipyard-title-button"
      data-action="add-pipeline"
      title="Add a pipeline from its pipeline.yaml in your home"
      onClick={() => actions.addPipeline()}
    >
      Add pipeline
    </button>
  );
  return (
    <SectionFrame name="pipelines" title="Pipelines" section={state.list} extra={add}>
      <ItemList
        items={state.list.data}
        className="shipyard-pipelines"
        empty={
          <>
            No pipelines yet: write a <code>pipeline.yaml</code> beside its notebooks and use{' '}
            <strong>Add pipeline</strong>.
          </>
        }
        render={pipeline => (
          <PipelineItem
            key={pipeline.id}
            pipeline={pipeline}
            state={state}
            actions={actions}
            busy={busy}
          />
        )}
      />
    </SectionFrame>
  );
}

/** How many of the selected pipeline's runs are listed. */
const RUNS_SHOWN = 8;

function PipelineItem(props: {
  pipeline: IPipeline;
  state: IPipelinesState;
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { pipeline, state, actions, busy } = props;
  const selected = state.selected === pipeline.id;
  const runs = selected ? state.runs : null;
  const latest = runs?.data?.[0] ?? null;
  // pausing stops the triggers only: a pipeline without any has nothing to pause
  const pausable = (pipeline.triggers ?? []).length > 0 || pipeline.paused;
  return (
    <li
      className="shipyard-item shipyard-pipeline"
      data-shipyard-pipeline={pipeline.name}
      data-selected={selected ? 'true' : 'false'}
      data-paused={pipeline.paused ? 'true' : 'false'}
    >
      <div className="shipyard-item-head">
        <ActionLink
          action="select-pipeline"
          href="#"
          onClick={() => actions.selectPipeline(selected ? null : pipeline.id)}
        >
          <span className="shipyard-item-name" title={pipeline.source_path}>
            {selected ? '▾ ' : '▸ '}
            {pipeline.name}
          </span>
        </ActionLink>
        {pipeline.paused ? (
          <span
            className="shipyard-badge"
            data-shipyard-badge="paused"
            title="Its triggers start no run until resumed; Run still does"
          >
            Paused
          </span>
        ) : null}
        {latest ? <Status status={latest.status} /> : null}
      </div>
      <div className="shipyard-item-meta">
        {pipeline.steps.length} {pipeline.steps.length === 1 ? 'step' : 'steps'} ·{' '}
        <code>{pipeline.source_path}</code>
      </div>
      {pipeline.description ? (
        <div className="shipyard-item-meta">{pipeline.description}</div>
      ) : null}
      {selected ? <PipelineTriggers pipeline={pipeline} /> : null}
      {selected && runs ? (
        <div className="shipyard-pipeline-body">
          <div className="shipyard-actions">
            <button
              className="jp-Button jp-mod-styled jp-mod-accept shipyard-button"
              data-action="run-pipeline"
              disabled={busy.has(`pipeline-run:${pipeline.id}`)}
              title={
                Object.keys(pipeline.parameters).length
                  ? 'Start a run now (asks for the parameters first)'
                  : 'Start a run now'
              }
              onClick={() => actions.runPipeline(pipeline)}
            >
              Run
            </button>
            {pausable ? (
              <button
                className="jp-Button jp-mod-styled shipyard-button"
                data-action="pause-pipeline"
                aria-pressed={pipeline.paused}
                disabled={busy.has(`pipeline-pause:${pipeline.id}`)}
                title={
                  pipeline.paused
                    ? 'Resume: its triggers start runs again'
                    : 'Pause: its triggers start no run until resumed (Run still does)'
                }
                onClick={() => actions.togglePipelinePause(pipeline)}
              >
                {pipeline.paused ? 'Resume' : 'Pause'}
              </button>
            ) : null}
          </div>
          {state.actionError ? (
            <div className="shipyard-error" role="alert" data-shipyard-error="action">
              {state.actionError}
            </div>
          ) : null}
          {runs.status === 'error' && runs.error ? (
            <div className="shipyard-error" role="alert">
              Runs: {runs.error}
            </div>
          ) : null}
          {runs.status === 'loading' ? <div className="shipyard-loading">Loading runs…</div> : null}
          {runs.data ? (
            runs.data.length ? (
              <ul className="shipyard-list shipyard-pipeline-runs">
                {runs.data.slice(0, RUNS_SHOWN).map(run => (
                  <li
                    key={run.id}
                    className="shipyard-pipeline-run-row"
                    data-shipyard-pipeline-run={run.id}
                    data-selected={run.id === state.run ? 'true' : 'false'}
                  >
                    <ActionLink
                      action="select-run"
                      href="#"
                      onClick={() => actions.selectPipelineRun(run.id)}
                    >
                      Run {shortRunId(run.id)}
                    </ActionLink>
                    <span className="shipyard-muted">
                      {' '}
                      {formatAgo(run.created_at)}
                      {run.repair_of ? ` · repairs ${shortRunId(run.repair_of)}` : ''}
                    </span>
                    <Status status={run.status} />
                  </li>
                ))}
              </ul>
            ) : (
              <Empty>No runs yet: start one with Run.</Empty>
            )
          ) : null}
          {state.run ? (
            <PipelineRunView
              pipeline={pipeline}
              detail={state.detail}
              actions={actions}
              busy={busy}
            />
          ) : null}
        </div>
      ) : null}
    </li>
  );
}

/** What starts the pipeline's runs besides Run: a line per trigger of its file. */
function PipelineTriggers(props: { pipeline: IPipeline }): React.ReactElement {
  const lines = pipelineTriggerLines(props.pipeline);
  if (!lines.length) {
    return (
      <div className="shipyard-item-meta shipyard-pipeline-triggers" data-shipyard-triggers="">
        No triggers: runs start with Run.
      </div>
    );
  }
  return (
    <ul
      className="shipyard-list shipyard-pipeline-triggers"
      data-shipyard-triggers={lines.length}
      aria-label="Triggers"
    >
      {lines.map((line, index) => (
        <li key={index} className="shipyard-item-meta" data-shipyard-trigger={line.kind}>
          {line.text}
        </li>
      ))}
    </ul>
  );
}

function PipelineRunView(props: {
  pipeline: IPipeline;
  detail: ISection<IPipelineRun>;
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { pipeline, detail, actions, busy } = props;
  const run = detail.data;
  return (
    <div
      className="shipyard-pipeline-run"
      data-shipyard-pipeline-run={run?.id ?? ''}
      data-status={run?.status ?? ''}
    >
      {detail.status === 'error' && detail.error ? (
        <div className="shipyard-error" role="alert">
          {detail.error}
        </div>
      ) : null}
      {!run && detail.status === 'loading' ? (
        <div className="shipyard-loading">Loading the run…</div>
      ) : null}
      {run ? (
        <>
          <div className="shipyard-item-head">
            <span>
              Run <code>{shortRunId(run.id)}</code>
            </span>
            <Status status={run.status} />
          </div>
          <div className="shipyard-item-meta">
            {stepCounts(run)}
            {run.status === 'running' ? ' · following…' : ''}
          </div>
          {run.reason && run.status !== 'succeeded' ? (
            <div className="shipyard-reason">{run.reason}</div>
          ) : null}
          <PipelineGraph pipeline={pipeline} run={run} actions={actions} />
          <div className="shipyard-actions">
            {canCancel(run) ? (
              <button
                className="jp-Button jp-mod-styled jp-mod-warn shipyard-button"
                data-action="cancel-pipeline-run"
                disabled={busy.has(`pipeline-cancel:${run.id}`)}
                title="Stop the running steps; the pending ones never start"
                onClick={() => actions.cancelPipelineRun(run)}
              >
                Cancel
              </button>
            ) : null}
            {canRepair(run) ? (
              <button
                className="jp-Button jp-mod-styled shipyard-button"
                data-action="repair-pipeline-run"
                disabled={busy.has(`pipeline-repair:${run.id}`)}
                title="A new run of the failed and cancelled steps and those after them; the others are reused"
                onClick={() => actions.repairPipelineRun(run)}
              >
                Repair
              </button>
            ) : null}
          </div>
        </>
      ) : null}
    </div>
  );
}

/**
 * The run's steps as a graph, top to bottom to fit the sidebar: a row per depth
 * (../logic/pipelines.ts ``layoutGraph``), the needs as SVG curves behind from the bottom
 * of a needed step to the top of the step that needs it, each step a narrow box with its
 * id, state, duration and links, one above the other.
 */
function PipelineGraph(props: {
  pipeline: IPipeline;
  run: IPipelineRun;
  actions: IPanelActions;
}): React.ReactElement {
  const { pipeline, run, actions } = props;
  const needs = new Map(pipeline.steps.map(s => [s.id, s.needs]));
  const layout = layoutGraph(run.steps.map(s => ({ id: s.step, needs: needs.get(s.step) ?? [] })));
  const steps = new Map(run.steps.map(s => [s.step, s]));
  return (
    <div className="shipyard-pipeline-graph" role="group" aria-label="The run's steps">
      <div
        className="shipyard-pipeline-canvas"
        style={{ width: layout.width, height: layout.height }}
      >
        <svg
          className="shipyard-pipeline-edges"
          width={layout.width}
          height={layout.height}
          aria-hidden="true"
        >
          <defs>
            <marker
              id="shipyard-arrow"
              viewBox="0 0 8 8"
              refX="8"
              refY="4"
              markerWidth="6"
              markerHeight="6"
              orient="auto"
            >
              <path d="M 0 0 L 8 4 L 0 8 z" />
            </marker>
          </defs>
          {layout.edges.map(edge => (
            <path
              key={`${edge.from}>${edge.to}`}
              d={edge.path}
              data-edge={`${edge.from}>${edge.to}`}
              markerEnd="url(#shipyard-arrow)"
            />
          ))}
        </svg>
        {layout.nodes.map(node => {
          const step = steps.get(node.id);
          return step ? (
            <StepNode
              key={node.id}
              step={step}
              run={run}
              actions={actions}
              style={{ left: node.x, top: node.y, width: node.width, height: node.height }}
            />
          ) : null;
        })}
      </div>
    </div>
  );
}

function StepNode(props: {
  step: IPipelineStep;
  run: IPipelineRun;
  actions: IPanelActions;
  style: React.CSSProperties;
}): React.ReactElement {
  const { step, run, actions } = props;
  const ran = step.run_id !== null && step.status !== 'pending';
  const hasOutput = ran && step.status !== 'running' && step.run_status !== 'queued';
  return (
    <div
      className="shipyard-step-node"
      data-shipyard-step={step.step}
      data-status={step.status}
      style={props.style}
      title={step.reason || undefined}
    >
      <div className="shipyard-step-head">
        <span className="shipyard-step-id" title={step.step}>
          {step.step}
        </span>
        <Status status={step.status} />
      </div>
      <div className="shipyard-step-meta">
        {stepDuration(step)}
        {step.attempt && step.attempt > 1 ? ` · attempt ${step.attempt}` : ''}
      </div>
      {ran ? (
        <div className="shipyard-links">
          {hasOutput ? (
            <ActionLink
              action="step-output"
              href={actions.stepOutputHref(step)}
              onClick={() => actions.downloadStepOutput(step, run)}
            >
              Output
            </ActionLink>
          ) : null}
          <ActionLink action="step-logs" href="#" onClick={() => actions.showStepLog(step, run)}>
            Logs
          </ActionLink>
        </div>
      ) : null}
    </div>
  );
}

// ------------------------------------------------------------------ deployments

function DeploymentsSection(props: {
  section: ISection<IDeploymentState[]>;
  history: ShipyardModel['state']['history'];
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { section, history, actions, busy } = props;
  return (
    <SectionFrame name="deployments" title="Deployments" section={section}>
      <ItemList
        items={section.data}
        className="shipyard-deployments"
        empty={
          <>
            No deployments yet: use <strong>Deploy…</strong> in a notebook's toolbar or{' '}
            <code>%deploy model --name NAME</code> in a cell.
          </>
        }
        render={s => (
          <DeploymentItem
            key={`${s.deployment.owner}/${s.deployment.name}`}
            state={s}
            samples={history[s.deployment.name] ?? []}
            actions={actions}
            busy={busy}
          />
        )}
      />
    </SectionFrame>
  );
}

function DeploymentItem(props: {
  state: IDeploymentState;
  samples: ShipyardModel['state']['history'][string];
  actions: IPanelActions;
  busy: ReadonlySet<string>;
}): React.ReactElement {
  const { state, samples, actions, busy } = props;
  const { deployment, metrics, metricsError } = state;
  const live = liveVersion(deployment.traffic);
  const rows = versionRows(deployment, metrics);
  const canRollBack = deployment.previous_version !== null;
  return (
    <li
      className="shipyard-item shipyard-deployment"
      data-shipyard-deployment={deployment.name}
      data-live-version={live ?? ''}
    >
      <div className="shipyard-item-head">
        <span className="shipyard-item-name">{deployment.name}</span>
        <span className="shipyard-badge" title="The version taking most of the traffic">
          {live ? `live v${live}` : 'no traffic'}
        </span>
      </div>
      <div className="shipyard-item-meta">
        <code className="shipyard-url" title="Where to POST predictions">
          {deployment.url}
        </code>
      </div>
      {metricsError ? (
        <div className="shipyard-error" role="alert">
          Metrics: {metricsError}
        </div>
      ) : null}
      <table className="shipyard-versions">
        <thead>
          <tr>
            <th>Version</th>
            <th>Traffic</th>
            <th>State</th>
            <th>p50</th>
            <th>p99</th>
            <th>Rate</th>
            <th>Errors</th>
            <th aria-label="Actions" />
          </tr>
        </thead>
        <tbody>
          {rows.map(row => (
            <tr
              key={row.version.version}
              data-shipyard-version={row.version.version}
              data-state={row.version.state}
              className={row.live ? 'shipyard-live' : undefined}
              title={row.version.reason ?? row.version.model_uri}
            >
              <td>v{row.version.version}</td>
              <td data-traffic={row.traffic}>
                {row.traffic}%
                {row.version.pending_percent !== null && row.version.state === 'starting'
                  ? ` (→ ${row.version.pending_percent}%)`
                  : ''}
              </td>
              <td>
                <span className="shipyard-status" data-status={row.version.state}>
                  {row.health}
                </span>
              </td>
              <td>{formatLatency(row.metrics?.latency_ms?.p50)}</td>
              <td>{formatLatency(row.metrics?.latency_ms?.p99)}</td>
              <td>{row.metrics ? formatRate(row.metrics.rate) : '–'}</td>
              <td>{row.metrics ? formatRatio(row.metrics.error_rate) : '–'}</td>
              <td>
                <button
                  className="jp-Button jp-mod-styled shipyard-button shipyard-small"
                  data-action="lineage"
                  title={`Where v${row.version.version} came from: its run, pipeline, notebook and input files`}
                  onClick={() => actions.showLineage(deployment.name, row.version.version)}
                >
                  Lineage
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <MetricsChart samples={samples} />
      <div className="shipyard-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-warn shipyard-button"
          data-action="rollback"
          disabled={!canRollBack || busy.has(`rollback:${deployment.name}`)}
          title={
            canRollBack
              ? `Send all traffic back to v${deployment.previous_version}`
              : 'No earlier version has served yet'
          }
          onClick={() => actions.rollback(state)}
        >
          Roll back
        </button>
      </div>
    </li>
  );
}

// ------------------------------------------------------------------ alerts

/**
 * Whether this server was given the address of the optional service ``name`` (the profile's
 * ``services``): an admin who turns the usage or alerts service off sees no section for it.
 * Unknown until the profile comes, and from a server that does not say: shown.
 */
function serviceHere(
  profile: IServerProfile | null | undefined,
  name: 'usage' | 'alerts'
): boolean {
  return profile?.services?.[name] !== false;
}

function AlertsSection(props: {
  alerts: IAlertsState;
  targets: ITargetsState;
  profile: IServerProfile | null;
  actions: IPanelActions;
}): React.ReactElement {
  const { alerts, profile } = props;
  const section: ISection<IAlertsState> = {
    status: alerts.status === 'idle' ? 'loading' : alerts.status,
    data: alerts,
    error: alerts.error,
    updated: alerts.updated
  };
  const firing = alerts.open.filter(a => a.state === 'firing').length;
  const title = firing ? `Alerts (${firing} firing)` : 'Alerts';
  const owners = showOwners([...alerts.open, ...alerts.resolved], profile?.user ?? '');
  const nothing = !alerts.open.length && !alerts.resolved.length;
  return (
    <SectionFrame name="alerts" title={title} section={section}>
      {alerts.status === 'ok' && nothing ? (
        <Empty>
          No alerts. {WATCHED}
          {profile?.admin ? ` ${WATCHED_ADMIN}` : ''}
        </Empty>
      ) : null}
      {alerts.open.length ? (
        <ul className="shipyard-list shipyard-alerts" data-alerts="open">
          {alerts.open.map(a => (
            <AlertItem key={a.id} alert={a} owners={owners} />
          ))}
        </ul>
      ) : null}
      {alerts.resolved.length ? (
        <>
          <h4 className="shipyard-alerts-heading">Resolved lately</h4>
          <ul className="shipyard-list shipyard-alerts" data-alerts="resolved">
            {alerts.resolved.map(a => (
              <AlertItem key={a.id} alert={a} owners={owners} />
            ))}
          </ul>
        </>
      ) : null}
      <TargetsBox targets={props.targets} actions={props.actions} />
    </SectionFrame>
  );
}

/**
 * Where the user is told about their alerts: the targets as the service shows them
 * (redacted), and a field that replaces them, with the schemes allowed and the service's
 * refusal next to it. The field starts empty again after each save (``key``).
 */
function TargetsBox(props: { targets: ITargetsState; actions: IPanelActions }): React.ReactElement {
  const { targets, actions } = props;
  const loaded = targetsLoaded(targets);
  return (
    <div className="shipyard-targets" data-targets="box" data-state={targets.status}>
      <h4 className="shipyard-alerts-heading">Notify me at</h4>
      {targets.status === 'error' && targets.error ? (
        <div className="shipyard-error" role="alert" data-targets="load-error">
          {targets.error}
        </div>
      ) : null}
      {targets.status === 'idle' || (targets.status === 'loading' && !loaded) ? (
        <div className="shipyard-muted">Loading…</div>
      ) : targets.targets.length ? (
        <ul className="shipyard-list shipyard-targets-list" data-targets="list">
          {targets.targets.map((t, i) => (
            <li key={`${i}:${t}`} className="shipyard-target" data-target={t}>
              <code>{t}</code>
            </li>
          ))}
        </ul>
      ) : loaded ? (
        <div className="shipyard-muted" data-targets="none">
          {NO_TARGETS}
        </div>
      ) : null}
      <TargetsForm key={targets.saved} targets={targets} actions={actions} />
    </div>
  );
}

function TargetsForm(props: {
  targets: ITargetsState;
  actions: IPanelActions;
}): React.ReactElement {
  const { targets, actions } = props;
  const [draft, setDraft] = React.useState('');
  const urls = parseTargets(draft);
  const busy = targets.saving || targets.status === 'loading';
  return (
    <form
      className="shipyard-targets-form"
      onSubmit={event => {
        event.preventDefault();
        if (urls.length) {
          actions.saveTargets(urls);
        }
      }}
    >
      <label className="shipyard-targets-field">
        <span>
          {targets.targets.length ? 'Replace them with' : 'Targets'} (apprise URLs, one a line)
        </span>
        <textarea
          className="jp-mod-styled"
          name="shipyard-alert-targets"
          rows={2}
          value={draft}
          placeholder={TARGET_EXAMPLE}
          spellCheck={false}
          autoComplete="off"
          aria-invalid={targets.saveError ? true : undefined}
          onChange={event => setDraft(event.target.value)}
        />
      </label>
      {targets.saveError ? (
        <div className="shipyard-error" role="alert" data-targets="error">
          {targets.saveError}
        </div>
      ) : null}
      {targetsLoaded(targets) ? (
        <div className="shipyard-muted shipyard-targets-hint" data-targets="schemes">
          {schemesHint(targets.schemes)}
          {targets.targets.length
            ? ' Saving replaces the targets above: they are shown redacted, so give again any to keep.'
            : ''}
        </div>
      ) : null}
      <div className="shipyard-actions">
        <button
          type="submit"
          className="jp-Button jp-mod-styled jp-mod-accept shipyard-button"
          data-action="targets-save"
          disabled={busy || !urls.length}
        >
          {targets.saving ? 'Saving…' : 'Save'}
        </button>
        {targets.targets.length ? (
          <button
            type="button"
            className="jp-Button jp-mod-styled shipyard-button"
            data-action="targets-clear"
            disabled={busy}
            title="Stop notifying any target of yours"
            onClick={() => actions.saveTargets([])}
          >
            Remove all
          </button>
        ) : null}
      </div>
    </form>
  );
}

function AlertItem(props: { alert: IAlert; owners: boolean }): React.ReactElement {
  const { alert, owners } = props;
  const figure = alertFigure(alert);
  const since = alertSince(alert);
  return (
    <li
      className="shipyard-alert"
      data-alert={alert.id}
      data-alert-state={alert.state}
      data-rule={alert.rule}
      title={alert.key}
    >
      <div className="shipyard-alert-head">
        <span className="shipyard-alert-state" data-alert-state={alert.state}>
          {alert.state}
        </span>
        {alert.severity ? (
          <span className="shipyard-badge shipyard-alert-severity" data-severity={alert.severity}>
            {alert.severity}
          </span>
        ) : null}
        <strong className="shipyard-alert-rule">{ruleLabel(alert.rule)}</strong>
        <span className="shipyard-alert-about">{alertAbout(alert)}</span>
      </div>
      <div className="shipyard-alert-summary">{alert.summary}</div>
      <div className="shipyard-alert-meta">
        {figure ? <span className="shipyard-alert-figure">{figure}</span> : null}
        <span className="shipyard-alert-since" title={since}>
          {alert.state} {formatAgo(since)}
        </span>
        {owners ? (
          <span className="shipyard-alert-owner">
            {alert.owner ? `about ${alert.owner}` : 'platform'}
          </span>
        ) : null}
      </div>
    </li>
  );
}

// ------------------------------------------------------------------ usage

function UsageSection(props: { usage: IUsageState; actions: IPanelActions }): React.ReactElement {
  const { usage, actions } = props;
  const mine = usage.mine;
  const section: ISection<IMyUsage> = {
    status: usage.status === 'idle' ? 'loading' : usage.status,
    data: mine,
    error: usage.error,
    updated: usage.updated
  };
  return (
    <SectionFrame name="usage" title={`Usage, last ${USAGE_DAYS} days`} section={section}>
      {mine ? <MyUsage mine={mine} metric={usage.metric} actions={actions} /> : null}
      {usage.platformError ? (
        <div className="shipyard-error" role="alert" data-usage-platform="error">
          Platform usage could not be read: {usage.platformError}
        </div>
      ) : null}
      {usage.platform ? <PlatformUsage platform={usage.platform} /> : null}
    </SectionFrame>
  );
}

function MyUsage(props: {
  mine: IMyUsage;
  metric: UsageMetric;
  actions: IPanelActions;
}): React.ReactElement {
  const { mine, metric, actions } = props;
  const totals = usageTotals(mine.days);
  return (
    <div className="shipyard-usage-mine">
      <dl className="shipyard-usage-totals">
        {USAGE_METRICS.map(m => (
          <div key={m.key} data-usage-total={m.key}>
            <dt>{m.label}</dt>
            <dd>{formatUsage(m.key, totals[m.key], mine.currency)}</dd>
          </div>
        ))}
      </dl>
      <div className="shipyard-usage-metrics" role="group" aria-label="Metric plotted">
        {USAGE_METRICS.map(m => (
          <button
            key={m.key}
            className="shipyard-usage-metric"
            data-action="usage-metric"
            data-metric={m.key}
            aria-pressed={m.key === metric}
            title={`Plot ${m.label} a day`}
            onClick={() => actions.usageMetric(m.key)}
          >
            {m.short}
          </button>
        ))}
      </div>
      <UsageChart days={mine.days} metric={metric} currency={mine.currency} />
      <UsageTable
        name="kind"
        caption="By kind"
        rows={mine.byKind}
        currency={mine.currency}
        empty="Nothing was counted in this period."
      />
      <UsageTable
        name="profile"
        caption="By profile"
        rows={mine.byProfile}
        currency={mine.currency}
        empty={null}
      />
    </div>
  );
}

function PlatformUsage(props: { platform: IPlatformUsage }): React.ReactElement {
  const { platform } = props;
  const { idle, rightsizing } = platform.waste;
  return (
    <div className="shipyard-usage-platform" data-usage-platform="ok">
      <h4 className="shipyard-usage-heading">
        Platform <span className="shipyard-badge">admins</span>
      </h4>
      <UsageTable
        name="users"
        caption="By user"
        rows={platform.byUser}
        currency={platform.currency}
        empty="Nobody used anything in this period."
      />
      <UsageTable
        name="platform-profiles"
        caption="By profile"
        rows={platform.byProfile}
        currency={platform.currency}
        empty={null}
      />
      <h4 className="shipyard-usage-heading">Waste and right-sizing</h4>
      {idle.length || rightsizing.length ? (
        <ul className="shipyard-list shipyard-usage-waste">
          {idle.map(i => (
            <li key={`idle-${i.owner}-${i.object}`} data-usage-waste="idle" data-owner={i.owner}>
              {i.message}
            </li>
          ))}
          {rightsizing.map(r => (
            <li
              key={`size-${r.profile}-${r.resource}`}
              data-usage-waste="rightsizing"
              data-profile={r.profile}
            >
              {r.message}
            </li>
          ))}
        </ul>
      ) : (
        <Empty>No idle servers, and every profile's limits fit its use.</Empty>
      )}
    </div>
  );
}

/** Rows of usage as a table: numbers in the cells, each column's unit in its header. */
function UsageTable(props: {
  name: string;
  caption: string;
  rows: IUsageRow[];
  currency: string;
  empty: React.ReactNode;
}): React.ReactElement | null {
  const { rows, currency } = props;
  if (!rows.length) {
    return props.empty ? <Empty>{props.empty}</Empty> : null;
  }
  return (
    <table className="shipyard-usage-table" data-usage-table={props.name}>
      <caption>{props.caption}</caption>
      <thead>
        <tr>
          <th scope="col" />
          {USAGE_METRICS.map(m => (
            <th key={m.key} scope="col" title={m.label}>
              {m.short}
              <span className="shipyard-usage-unit">{usageUnit(m.key, currency)}</span>
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map(r => (
          <tr key={r.key} data-usage-key={r.key}>
            <th scope="row" title={r.key}>
              {r.key}
            </th>
            {USAGE_METRICS.map(m => (
              <td key={m.key}>{formatUsage(m.key, r[m.key], currency, false)}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// ------------------------------------------------------------------ audit (hub admins)

function AuditSection(props: { audit: IAuditState; actions: IPanelActions }): React.ReactElement {
  const { audit, actions } = props;
  const section: ISection<IAuditRecord[]> = {
    status: audit.status === 'idle' ? 'loading' : audit.status,
    data: audit.status === 'ok' || audit.records.length ? audit.records : null,
    error: audit.error,
    updated: audit.updated
  };
  const advice = audit.status === 'error' ? errorAdvice(audit.errorStatus) : null;
  return (
    <SectionFrame
      name="audit"
      title="Audit"
      section={section}
      extra={<span className="shipyard-badge shipyard-title-badge">admins</span>}
    >
      {advice ? <div className="shipyard-muted shipyard-audit-advice">{advice}</div> : null}
      <AuditFilterForm
        key={`${audit.filters.user}|${audit.filters.action}|${audit.filters.since}`}
        applied={audit.filters}
        suggestions={actionSuggestions(audit.records)}
        busy={audit.status === 'loading'}
        onApply={filters => actions.auditFilter(filters)}
      />
      <VerifyBox audit={audit} actions={actions} />
      {audit.status === 'ok' || audit.records.length ? (
        audit.records.length ? (
          <ul className="shipyard-list shipyard-audit-records">
            {audit.records.map(r => (
              <AuditRecordItem key={r.seq} record={r} />
            ))}
          </ul>
        ) : (
          <Empty>{emptyMessage(audit.filters)}</Empty>
        )
      ) : null}
      {audit.nextBefore !== null && audit.records.length ? (
        <div className="shipyard-actions">
          <button
            className="jp-Button jp-mod-styled shipyard-button"
            data-action="audit-more"
            disabled={audit.loadingMore || audit.status === 'loading'}
            title={`Older records, before seq ${audit.nextBefore}`}
            onClick={() => actions.auditMore()}
          >
            {audit.loadingMore ? 'Loading…' : 'Load more'}
          </button>
        </div>
      ) : null}
    </SectionFrame>
  );
}

/** What each filter takes (the service checks it and says what to fix). */
const FILTER_HINTS: Record<keyof IAuditFilters, string> = {
  user: 'Records where this user acted or owned the target',
  action: 'An action (job.create) or a family (job)',
  since: 'An age (30m, 2h, 7d, 4w) or an ISO time (2026-01-31T12:00Z)'
};

function AuditFilterForm(props: {
  applied: IAuditFilters;
  suggestions: string[];
  busy: boolean;
  onApply: (filters: IAuditFilters) => void;
}): React.ReactElement {
  const [draft, setDraft] = React.useState<IAuditFilters>(props.applied);
  const field = (key: keyof IAuditFilters, label: string, placeholder: string, list?: string) => (
    <label className="shipyard-audit-field" title={FILTER_HINTS[key]}>
      <span>{label}</span>
      <input
        className="jp-mod-styled"
        name={`shipyard-audit-${key}`}
        value={draft[key]}
        placeholder={placeholder}
        list={list}
        spellCheck={false}
        onChange={event => setDraft({ ...draft, [key]: event.target.value })}
      />
    </label>
  );
  return (
    <form
      className="shipyard-audit-filters"
      onSubmit={event => {
        event.preventDefault();
        props.onApply(draft);
      }}
    >
      {field('user', 'User', 'anyone')}
      {field('action', 'Action', 'any', 'shipyard-audit-actions')}
      {field('since', 'Since', 'e.g. 7d')}
      <datalist id="shipyard-audit-actions">
        {props.suggestions.map(a => (
          <option key={a} value={a} />
        ))}
      </datalist>
      <div className="shipyard-actions">
        <button
          type="submit"
          className="jp-Button jp-mod-styled jp-mod-accept shipyard-button"
          data-action="audit-apply"
          disabled={props.busy}
        >
          Apply
        </button>
        <button
          type="button"
          className="jp-Button jp-mod-styled shipyard-button"
          data-action="audit-clear"
          disabled={props.busy}
          onClick={() => {
            setDraft(NO_FILTERS);
            props.onApply(NO_FILTERS);
          }}
        >
          Clear
        </button>
      </div>
    </form>
  );
}

function VerifyBox(props: { audit: IAuditState; actions: IPanelActions }): React.ReactElement {
  const { verify } = props.audit;
  const summary = verify.result ? verifySummary(verify.result) : null;
  return (
    <div className="shipyard-audit-verify">
      <button
        className="jp-Button jp-mod-styled shipyard-button"
        data-action="audit-verify"
        disabled={verify.status === 'running'}
        title="Check every record's hash against the one before it, in the file and the table"
        onClick={() => props.actions.auditVerify()}
      >
        {verify.status === 'running' ? 'Verifying…' : 'Verify trail'}
      </button>
      {verify.status === 'error' && verify.error ? (
        <div className="shipyard-error" role="alert" data-verify="error">
          Could not verify the trail: {verify.error}
        </div>
      ) : null}
      {summary && verify.result ? (
        <div
          className={`shipyard-audit-verdict ${verify.result.ok ? 'shipyard-ok' : 'shipyard-error'}`}
          role={verify.result.ok ? 'status' : 'alert'}
          data-verify={verify.result.ok ? 'ok' : 'broken'}
        >
          <div>{summary.headline}</div>
          {summary.problems.length ? (
            <ul className="shipyard-audit-problems">
              {summary.problems.slice(0, 5).map((p, i) => (
                <li key={i}>{p}</li>
              ))}
            </ul>
          ) : null}
        </div>
      ) : null}
    </div>
  );
}

function AuditRecordItem(props: { record: IAuditRecord }): React.ReactElement {
  const { record } = props;
  const denied = isDenied(record);
  const time = record.__timestamp__;
  return (
    <li
      className={`shipyard-item shipyard-audit-record${denied ? ' shipyard-audit-denied' : ''}`}
      data-audit-seq={record.seq}
      data-audit-action={record.action}
      data-outcome={record.outcome}
    >
      <div className="shipyard-item-head">
        <code className="shipyard-item-name">{record.action}</code>
        <span className="shipyard-status" data-status={record.outcome}>
          {record.outcome}
        </span>
      </div>
      <div className="shipyard-item-meta">
        <span data-audit-actor={record.actor ?? ''}>{describeActor(record)}</span>
        {record.target ? (
          <>
            {' → '}
            <span className="shipyard-audit-target">{record.target}</span>
          </>
        ) : null}
      </div>
      <div className="shipyard-item-meta">
        <time dateTime={time} title={`${formatAgo(time)} · seq ${record.seq}`}>
          {formatAuditTime(time)}
        </time>
        {record.client ? ` · from ${record.client}` : ''}
      </div>
      {record.reason && record.outcome !== 'allowed' ? (
        <div className="shipyard-reason">{record.reason}</div>
      ) : null}
    </li>
  );
}
