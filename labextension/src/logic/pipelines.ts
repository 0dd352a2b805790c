/**
 * Pipelines in the panel: a run's steps laid out as a graph by depth, how a run and its
 * steps read, which actions a run allows, the Run form's parameter texts, and a
 * pipeline's triggers in words.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/pipelines.spec.ts.
 */
import type {
  IPipeline,
  IPipelineRun,
  IPipelineStep,
  IPipelineTrigger,
  JSONValue
} from '../api/types';
import { formatDuration, secondsBetween } from './format';
import { describeCronTrigger } from './state';

/** A step as the layout needs it: its id and the ids of the steps it needs. */
export interface IGraphStep {
  id: string;
  needs: readonly string[];
}

/** Where one step's node goes. */
export interface IGraphNode {
  id: string;
  /** The step's depth, its row from the top: 0 without needs, else 1 + the deepest of its needs. */
  depth: number;
  /** Its place in its row, left to right, in the order the steps were given. */
  index: number;
  /** The node's top-left corner and size, in pixels. */
  x: number;
  y: number;
  width: number;
  height: number;
}

/** An edge from a needed step to the step that needs it. */
export interface IGraphEdge {
  from: string;
  to: string;
  /** An SVG path from the bottom middle of ``from`` to the top middle of ``to``. */
  path: string;
}

export interface IGraphLayout {
  nodes: IGraphNode[];
  edges: IGraphEdge[];
  /** The steps by depth: ``rows[d]`` are the ids at depth ``d``, in the given order. */
  rows: string[][];
  width: number;
  height: number;
}

/** The sizes of the graph, in pixels. */
export interface IGraphSizes {
  nodeWidth: number;
  nodeHeight: number;
  /** Between two nodes side by side in a row. */
  nodeGap: number;
  /** Between two rows (the edges run there). */
  rowGap: number;
  /** Around the whole graph. */
  margin: number;
}

/** Two nodes side by side fit the panel's 240 px sidebar: 2 * 4 + 2 * 104 + 8 = 224 px. */
export const GRAPH_SIZES: IGraphSizes = {
  nodeWidth: 104,
  nodeHeight: 92,
  nodeGap: 8,
  rowGap: 28,
  margin: 4
};

/**
 * Each step's depth: 0 for one that needs nothing, else 1 + the largest depth of what it
 * needs. A need that names no step given is ignored (the service checks the file, so it
 * does not happen); a cycle does not hang: a step met again while its depth is being
 * worked out counts as depth 0 there.
 */
export function stepDepths(steps: readonly IGraphStep[]): Map<string, number> {
  const byId = new Map(steps.map(s => [s.id, s]));
  const depths = new Map<string, number>();
  const visiting = new Set<string>();
  const depth = (id: string): number => {
    const known = depths.get(id);
    if (known !== undefined) {
      return known;
    }
    const step = byId.get(id);
    if (!step || visiting.has(id)) {
      return -1;
    }
    visiting.add(id);
    let d = 0;
    for (const need of step.needs) {
      if (byId.has(need)) {
        d = Math.max(d, depth(need) + 1);
      }
    }
    visiting.delete(id);
    depths.set(id, d);
    return d;
  };
  for (const s of steps) {
    depth(s.id);
  }
  return depths;
}

/**
 * The graph of ``steps``, top to bottom so that it fits a narrow sidebar: one row per
 * depth (depth 0 at the top), each row's nodes side by side in the order the steps are
 * given (the service gives them in run order) and centred against the widest row, and
 * one edge per need. A row wider than the panel scrolls sideways.
 */
export function layoutGraph(
  steps: readonly IGraphStep[],
  sizes: IGraphSizes = GRAPH_SIZES
): IGraphLayout {
  const depths = stepDepths(steps);
  const rows: string[][] = [];
  for (const s of steps) {
    const d = depths.get(s.id) ?? 0;
    while (rows.length <= d) {
      rows.push([]);
    }
    if (!rows[d].includes(s.id)) {
      rows[d].push(s.id);
    }
  }
  const widest = Math.max(0, ...rows.map(r => r.length));
  const width = widest
    ? 2 * sizes.margin + widest * sizes.nodeWidth + (widest - 1) * sizes.nodeGap
    : 0;
  const nodes: IGraphNode[] = [];
  const byId = new Map<string, IGraphNode>();
  rows.forEach((ids, depth) => {
    // a narrower row is centred against the widest
    const own = ids.length * sizes.nodeWidth + (ids.length - 1) * sizes.nodeGap;
    const left = sizes.margin + (width - 2 * sizes.margin - own) / 2;
    ids.forEach((id, index) => {
      const node: IGraphNode = {
        id,
        depth,
        index,
        x: left + index * (sizes.nodeWidth + sizes.nodeGap),
        y: sizes.margin + depth * (sizes.nodeHeight + sizes.rowGap),
        width: sizes.nodeWidth,
        height: sizes.nodeHeight
      };
      nodes.push(node);
      byId.set(id, node);
    });
  });
  const edges: IGraphEdge[] = [];
  for (const s of steps) {
    const to = byId.get(s.id);
    for (const need of s.needs) {
      const from = byId.get(need);
      if (from && to) {
        edges.push({ from: need, to: s.id, path: edgePath(from, to) });
      }
    }
  }
  const height = rows.length
    ? 2 * sizes.margin + rows.length * sizes.nodeHeight + (rows.length - 1) * sizes.rowGap
    : 0;
  return { nodes, edges, rows, width, height };
}

/** A smooth curve from the middle of ``from``'s bottom side to the middle of ``to``'s top. */
function edgePath(from: IGraphNode, to: IGraphNode): string {
  const x1 = from.x + from.width / 2;
  const y1 = from.y + from.height;
  const x2 = to.x + to.width / 2;
  const y2 = to.y;
  const bend = Math.max(8, (y2 - y1) / 2);
  return `M ${x1} ${y1} C ${x1} ${y1 + bend}, ${x2} ${y2 - bend}, ${x2} ${y2}`;
}

/**
 * How long a step took (or has been running, at ``now``): the service's duration when it
 * has one, else from its start; a dash before it started.
 */
export function stepDuration(
  step: Pick<IPipelineStep, 'duration_seconds' | 'started_at' | 'ended_at'>,
  now: Date = new Date()
): string {
  if (step.duration_seconds !== null && step.duration_seconds !== undefined) {
    return formatDuration(step.duration_seconds);
  }
  if (!step.started_at) {
    return '–';
  }
  return formatDuration(secondsBetween(step.started_at, step.ended_at, now));
}

/** "2 of 3 steps succeeded, 1 running": the run's steps counted by state, in a line. */
export function stepCounts(run: Pick<IPipelineRun, 'steps'>): string {
  const total = run.steps.length;
  const count = (states: string[]) => run.steps.filter(s => states.includes(s.status)).length;
  const done = count(['succeeded', 'reused']);
  const parts = [`${done} of ${total} ${total === 1 ? 'step' : 'steps'} done`];
  for (const state of ['running', 'failed', 'skipped', 'cancelled', 'pending']) {
    const n = count([state]);
    if (n) {
      parts.push(`${n} ${state}`);
    }
  }
  return parts.join(', ');
}

/** Whether the run may still change (the panel polls it then). */
export function isRunActive(run: Pick<IPipelineRun, 'status'> | null | undefined): boolean {
  return run?.status === 'running';
}

/** Whether Repair applies: a failed or cancelled run. */
export function canRepair(run: Pick<IPipelineRun, 'status'>): boolean {
  return run.status === 'failed' || run.status === 'cancelled';
}

/** Whether Cancel applies: a running run. */
export function canCancel(run: Pick<IPipelineRun, 'status'>): boolean {
  return run.status === 'running';
}

/**
 * The text each parameter's input starts with: a string default as it is, any other value
 * as JSON (``4``, ``true``, ``[1, 2]``).
 */
export function pipelineParameterTexts(
  declared: Readonly<Record<string, unknown>>
): Record<string, string> {
  return Object.fromEntries(
    Object.entries(declared).map(([name, value]) => [
      name,
      typeof value === 'string' ? value : JSON.stringify(value)
    ])
  );
}

/**
 * The values a run is started with, from the texts typed, or the problems to fix (all of
 * them). Only the parameters whose text differs from their default's are sent, so the
 * others keep the file's value. A parameter whose default is a string takes the text as
 * it is; any other is read as JSON.
 */
export function pipelineParameterValues(
  declared: Readonly<Record<string, unknown>>,
  texts: Readonly<Record<string, string>>
): { ok: true; values: Record<string, JSONValue> } | { ok: false; errors: string[] } {
  const initial = pipelineParameterTexts(declared);
  const values: Record<string, JSONValue> = {};
  const errors: string[] = [];
  for (const [name, fallback] of Object.entries(declared)) {
    const text = texts[name];
    if (text === undefined || text === initial[name]) {
      continue;
    }
    if (typeof fallback === 'string') {
      values[name] = text;
      continue;
    }
    try {
      values[name] = JSON.parse(text) as JSONValue;
    } catch {
      errors.push(
        `${name} must be a JSON value like its default ${initial[name]} ` +
          '(a number, true or false, null, a "quoted string", a [list] or an {object})'
      );
    }
  }
  return errors.length ? { ok: false, errors } : { ok: true, values };
}

/**
 * The lines of the service's message for a refused pipeline file (one file:line:column
 * error a line), without blank ones.
 */
export function messageLines(message: string): string[] {
  return message
    .split('\n')
    .map(line => line.trimEnd())
    .filter(line => line.trim() !== '');
}

/** A run's short name: its id's first 8 characters. */
export function shortRunId(id: string): string {
  return id.slice(0, 8);
}

// ------------------------------------------------------------------ triggers

/** A number of seconds as typed in a file: ``0.5``, ``30``, ``1.25`` (no trailing zeros). */
function seconds(value: number): string {
  return String(Number(value.toFixed(3)));
}

/**
 * One trigger of a pipeline in a line: a cron trigger as the jobs section shows it
 * (``0 6 * * * (Europe/Paris)``), ``new files matching data/*.csv, 0.5 s quiet``,
 * ``webhook: POST api/webhooks/…`` (``webhookUrl``: the pipeline's, under the scheduler
 * service), ``after job <id>``, ``after pipeline <name>``. A kind this panel does not know
 * yet reads as its name.
 */
export function describePipelineTrigger(
  trigger: IPipelineTrigger,
  webhookUrl: string | null = null
): string {
  switch (trigger.kind) {
    case 'cron':
      return describeCronTrigger(trigger);
    case 'file': {
      const quiet =
        typeof trigger.debounce_seconds === 'number'
          ? `, ${seconds(trigger.debounce_seconds)} s quiet`
          : '';
      return `new files matching ${trigger.glob}${quiet}`;
    }
    case 'webhook':
      return webhookUrl ? `webhook: POST ${webhookUrl}` : 'webhook';
    case 'after_job':
      return `after job ${trigger.upstream_job_id}`;
    case 'after_pipeline':
      return `after pipeline ${trigger.pipeline}`;
    default:
      return `${String((trigger as { kind?: unknown }).kind ?? 'unknown')} trigger`;
  }
}

/** What starts the pipeline's runs besides Run: each trigger of its file in a line. */
export function pipelineTriggerLines(
  pipeline: Pick<IPipeline, 'triggers' | 'webhook_url'>
): { kind: string; text: string }[] {
  return ((pipeline.triggers ?? []) as unknown as IPipelineTrigger[]).map(trigger => ({
    kind: String(trigger.kind),
    text: describePipelineTrigger(trigger, pipeline.webhook_url)
  }));
}
