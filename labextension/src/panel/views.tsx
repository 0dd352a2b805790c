/**
 * The panel's React views: four sections rendered from :class:`ShipyardModel`'s state, and
 * the Audit section for hub admins (nothing of it is rendered for anyone else).
 *
 * Stable hooks for tests and users' own styles: every section is an element with
 * ``data-shipyard-section``; jobs and deployments carry their name in
 * ``data-shipyard-job`` / ``data-shipyard-deployment``; buttons and links carry
 * ``data-action``; statuses are ``.shipyard-status[data-status]``; audit records carry
 * ``data-audit-seq``, ``data-audit-action`` and ``data-outcome``, the verification's
 * result ``data-verify`` (``ok`` or ``broken``).
 */
import * as React from 'react';

import type { IAuditRecord, IExperimentRun, IJob, IRun, IServerProfile } from '../api/types';
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
import { describeTriggers, IJobRow, liveVersion, versionRows } from '../logic/state';
import { MetricsChart } from './chart';
import type { IDeploymentState, ISection, ShipyardModel } from './model';

/** What the views ask the widget to do (dialogs, notifications and downloads are its). */
export interface IPanelActions {
  refresh(): void;
  runNow(job: IJob): void;
  togglePause(job: IJob): void;
  downloadOutput(run: IRun, job: IJob): void;
  showLogs(run: IRun, job: IJob): void;
  rollback(state: IDeploymentState): void;
  outputHref(run: IRun): string;
  /** Show the newest audit records matching ``filters``. */
  auditFilter(filters: IAuditFilters): void;
  /** Show the next (older) page of audit records. */
  auditMore(): void;
  /** Check the audit trail's hash chain. */
  auditVerify(): void;
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
      <ExperimentsSection section={state.experiments} />
      <JobsSection section={state.jobs} actions={actions} busy={busy} />
      <DeploymentsSection
        section={state.deployments}
        history={state.history}
        actions={actions}
        busy={busy}
      />
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
