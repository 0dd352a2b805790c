/**
 * What the panel shows, derived from the services' answers: pure functions of their JSON.
 *
 * - jobs: each job's next run, latest run, and a running run's progress;
 * - deployments: the live version, each version's traffic and metrics, and a short
 *   history of metrics samples for the inline chart (the deployer's metrics endpoint
 *   answers with the current window only, so the panel keeps the last samples it polled);
 * - the chart's SVG paths.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/state.spec.ts.
 */
import type {
  ICronTrigger,
  IDeployment,
  IDeploymentMetrics,
  IJob,
  ILogChunk,
  IRun,
  IVersion,
  IVersionMetrics,
  RunStatus
} from '../api/types';

// ------------------------------------------------------------------ jobs

/** The newest run of each job, from runs listed newest first (the service's order). */
export function latestRunByJob(runs: IRun[]): Map<string, IRun> {
  const latest = new Map<string, IRun>();
  for (const run of runs) {
    const seen = latest.get(run.job_id);
    if (!seen || Date.parse(run.queued_at) > Date.parse(seen.queued_at)) {
      latest.set(run.job_id, run);
    }
  }
  return latest;
}

/** The job's soonest cron tick and the time zone to show it in; null when none or paused. */
export function nextRun(job: IJob): { at: string; timezone: string } | null {
  if (job.paused) {
    return null;
  }
  let best: { at: string; timezone: string } | null = null;
  for (const t of job.triggers) {
    if (t.trigger.kind !== 'cron' || !t.next_fire_at) {
      continue;
    }
    if (!best || Date.parse(t.next_fire_at) < Date.parse(best.at)) {
      best = { at: t.next_fire_at, timezone: (t.trigger as ICronTrigger).timezone || 'UTC' };
    }
  }
  return best;
}

/** A cron trigger in the panel's words: its expression and zone, ``0 6 * * * (Europe/Berlin)``. */
export function describeCronTrigger(
  trigger: Pick<ICronTrigger, 'expression' | 'timezone'>
): string {
  return `${trigger.expression} (${trigger.timezone || 'UTC'})`;
}

/** How a job is triggered, in a few words: ``0 6 * * * (Europe/Berlin)``, ``file data/*.csv``. */
export function describeTriggers(job: IJob): string {
  if (!job.triggers.length) {
    return 'manual runs only';
  }
  return job.triggers
    .map(({ trigger }) => {
      switch (trigger.kind) {
        case 'cron':
          return describeCronTrigger(trigger);
        case 'file':
          return `file ${trigger.glob}`;
        case 'webhook':
          return 'webhook';
        case 'after_job':
          return 'after another job';
        default:
          return 'trigger';
      }
    })
    .join(', ');
}

/**
 * The run's progress through the notebook's code cells, when the worker reports it (in the
 * run, or in a piece of its log, whose ``status`` is a plain string).
 */
export function runProgress(
  run: Pick<ILogChunk, 'status' | 'cells_done' | 'cells_total'> | null | undefined
): { done: number; total: number; fraction: number } | null {
  if (!run || run.status !== 'running' || !run.cells_total || run.cells_total <= 0) {
    return null;
  }
  const done = Math.min(Math.max(run.cells_done ?? 0, 0), run.cells_total);
  return { done, total: run.cells_total, fraction: done / run.cells_total };
}

/** Whether a run may still change (its log may grow). */
export function isActive(status: RunStatus | null | undefined): boolean {
  return status === 'queued' || status === 'running';
}

/** A job row of the panel. */
export interface IJobRow {
  job: IJob;
  latest: IRun | null;
  /** The latest run's status, or ``none`` when the job never ran. */
  status: RunStatus | 'none';
  next: { at: string; timezone: string } | null;
  progress: { done: number; total: number; fraction: number } | null;
}

/** The panel's job rows, ordered by name. */
export function jobRows(jobs: IJob[], latest: Map<string, IRun>): IJobRow[] {
  return [...jobs]
    .sort((a, b) => a.name.localeCompare(b.name) || a.owner.localeCompare(b.owner))
    .map(job => {
      const run = latest.get(job.id) ?? null;
      return {
        job,
        latest: run,
        status: run ? run.status : 'none',
        next: nextRun(job),
        progress: runProgress(run)
      };
    });
}

/**
 * A log that grows while a run runs: the text so far and where to ask from next.
 *
 * ``appendLog`` takes a chunk of ``GET runs/<id>/log?offset=N``; a chunk from another
 * offset than the one asked for (a retried request) is ignored, so text is never doubled.
 */
export interface ILogState {
  text: string;
  offset: number;
  complete: boolean;
  /** The run's status as the log's answer gives it (a string, not a ``RunStatus``). */
  status: string | null;
  cells_done: number | null;
  cells_total: number | null;
}

export const EMPTY_LOG: ILogState = {
  text: '',
  offset: 0,
  complete: false,
  status: null,
  cells_done: null,
  cells_total: null
};

export function appendLog(state: ILogState, chunk: ILogChunk): ILogState {
  if (chunk.offset !== state.offset) {
    return state;
  }
  return {
    text: state.text + chunk.text,
    offset: Math.max(chunk.next_offset, state.offset),
    complete: chunk.complete,
    status: chunk.status,
    cells_done: chunk.cells_done ?? null,
    cells_total: chunk.cells_total ?? null
  };
}

// ------------------------------------------------------------------ deployments

/**
 * The version that takes most of the traffic (the newest of equals), or null when none
 * takes any.
 */
export function liveVersion(traffic: Record<string, number>): string | null {
  let best: string | null = null;
  for (const [version, percent] of Object.entries(traffic)) {
    if (!(percent > 0)) {
      continue;
    }
    if (
      best === null ||
      percent > traffic[best] ||
      (percent === traffic[best] && Number(version) > Number(best))
    ) {
      best = version;
    }
  }
  return best;
}

/** A version row: the version, its traffic and its metrics (when polled). */
export interface IVersionRow {
  version: IVersion;
  traffic: number;
  live: boolean;
  metrics: IVersionMetrics | null;
  /** ``ready``, ``starting``…, or ``circuit open`` when its breaker took it out. */
  health: string;
}

/**
 * The versions worth a row: those taking traffic or not stopped, newest first (a
 * deployment with many old versions would bury the live one).
 */
export function versionRows(
  deployment: IDeployment,
  metrics: IDeploymentMetrics | null
): IVersionRow[] {
  const live = liveVersion(deployment.traffic);
  return [...deployment.versions]
    .filter(v => v.state !== 'stopped' || (deployment.traffic[String(v.version)] ?? 0) > 0)
    .sort((a, b) => b.version - a.version)
    .map(version => {
      const key = String(version.version);
      const m = metrics?.versions[key] ?? null;
      const breaker = m?.breaker ?? version.breaker;
      const health = breaker?.open
        ? breaker.serving
          ? 'circuit open (still serving)'
          : 'circuit open'
        : version.state;
      return {
        version,
        traffic: deployment.traffic[key] ?? 0,
        live: key === live,
        metrics: m,
        health
      };
    });
}

/** One polled sample of a deployment's live version. */
export interface ISample {
  /** ms since the epoch. */
  t: number;
  p50: number | null;
  p99: number | null;
  rate: number;
  errorRate: number;
}

/** The samples of each deployment, oldest first. */
export type History = Readonly<Record<string, readonly ISample[]>>;

/** How many samples the chart keeps: 5 minutes at one every 5 s. */
export const HISTORY_LENGTH = 60;

/**
 * ``history`` with a sample of ``metrics`` added for deployment ``name``: the traffic-
 * weighted latency, rate and error rate over its versions. Keeps the last ``max``.
 */
export function pushSample(
  history: History,
  name: string,
  metrics: IDeploymentMetrics,
  t: number,
  max = HISTORY_LENGTH
): History {
  const versions = Object.values(metrics.versions);
  const rate = versions.reduce((sum, v) => sum + (v.rate || 0), 0);
  const requests = versions.reduce((sum, v) => sum + (v.window_requests || 0), 0);
  const errors = versions.reduce((sum, v) => sum + (v.window_errors || 0), 0);
  const weighted = (pick: (v: IVersionMetrics) => number | null): number | null => {
    let total = 0;
    let weight = 0;
    for (const v of versions) {
      const value = pick(v);
      if (value === null || value === undefined) {
        continue;
      }
      const w = v.window_requests || 0;
      total += value * w;
      weight += w;
    }
    return weight > 0 ? total / weight : null;
  };
  const sample: ISample = {
    t,
    p50: weighted(v => v.latency_ms?.p50 ?? null),
    p99: weighted(v => v.latency_ms?.p99 ?? null),
    rate,
    errorRate: requests ? errors / requests : 0
  };
  const previous = history[name] ?? [];
  return { ...history, [name]: [...previous, sample].slice(-max) };
}

/** ``history`` without the deployments no longer listed. */
export function pruneHistory(history: History, names: Iterable<string>): History {
  const keep = new Set(names);
  const out: Record<string, readonly ISample[]> = {};
  for (const [name, samples] of Object.entries(history)) {
    if (keep.has(name)) {
      out[name] = samples;
    }
  }
  return out;
}

// ------------------------------------------------------------------ chart

/**
 * An SVG path through ``values`` spread over ``width`` × ``height`` (y up), scaled to
 * ``max`` (default: the largest value). A null breaks the line; an empty string when
 * nothing is drawn.
 */
export function sparklinePath(
  values: readonly (number | null)[],
  width: number,
  height: number,
  max?: number
): string {
  const known = values.filter((v): v is number => v !== null && Number.isFinite(v));
  if (!known.length) {
    return '';
  }
  const top = max ?? Math.max(...known);
  const scale = top > 0 ? top : 1;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  let path = '';
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = values.length > 1 ? i * step : width / 2;
    const y = height - (Math.min(Math.max(v, 0), scale) / scale) * height;
    path += `${pen ? 'L' : 'M'}${round(x)},${round(y)}`;
    pen = true;
  });
  return path;
}

function round(n: number): string {
  return String(Math.round(n * 10) / 10);
}
