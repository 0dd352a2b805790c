import { describe, expect, it } from 'vitest';

import type { IPipeline, IPipelineRun, IPipelineStep, IPipelineTrigger } from '../api/types';
import {
  canCancel,
  canRepair,
  describePipelineTrigger,
  GRAPH_SIZES,
  isRunActive,
  layoutGraph,
  messageLines,
  pipelineParameterTexts,
  pipelineParameterValues,
  pipelineTriggerLines,
  stepCounts,
  stepDepths,
  stepDuration
} from '../logic/pipelines';

/** ingest -> features-a, features-b -> train (fan-in) -> report, in run order. */
const FIVE = [
  { id: 'ingest', needs: [] },
  { id: 'features-a', needs: ['ingest'] },
  { id: 'features-b', needs: ['ingest'] },
  { id: 'train', needs: ['features-a', 'features-b'] },
  { id: 'report', needs: ['train'] }
];

function step(id: string, status: IPipelineStep['status'], extra: Partial<IPipelineStep> = {}) {
  return {
    step: id,
    status,
    run_id: null,
    run_status: null,
    attempt: null,
    reason: '',
    outputs: {},
    files: {},
    started_at: null,
    ended_at: null,
    duration_seconds: null,
    ...extra
  } as IPipelineStep;
}

describe('stepDepths', () => {
  it('puts steps without needs at 0 and each other one past its deepest need', () => {
    const depths = stepDepths(FIVE);
    expect(Object.fromEntries(depths)).toEqual({
      ingest: 0,
      'features-a': 1,
      'features-b': 1,
      train: 2,
      report: 3
    });
  });

  it('takes the deepest need, not the first, whatever the order given', () => {
    const steps = [
      { id: 'late', needs: ['a', 'c'] },
      { id: 'c', needs: ['b'] },
      { id: 'b', needs: ['a'] },
      { id: 'a', needs: [] }
    ];
    expect(Object.fromEntries(stepDepths(steps))).toEqual({ a: 0, b: 1, c: 2, late: 3 });
  });

  it('ignores a need that names no step and does not hang on a cycle', () => {
    expect(stepDepths([{ id: 'a', needs: ['ghost'] }]).get('a')).toBe(0);
    const cycle = stepDepths([
      { id: 'a', needs: ['b'] },
      { id: 'b', needs: ['a'] }
    ]);
    expect(cycle.size).toBe(2);
  });
});

describe('layoutGraph', () => {
  it('makes one row per depth, in run order, and one edge per need', () => {
    const layout = layoutGraph(FIVE);
    expect(layout.rows).toEqual([['ingest'], ['features-a', 'features-b'], ['train'], ['report']]);
    expect(layout.edges.map(e => `${e.from}>${e.to}`)).toEqual([
      'ingest>features-a',
      'ingest>features-b',
      'features-a>train',
      'features-b>train',
      'train>report'
    ]);
    expect(layout.nodes.map(n => [n.id, n.depth, n.index])).toEqual([
      ['ingest', 0, 0],
      ['features-a', 1, 0],
      ['features-b', 1, 1],
      ['train', 2, 0],
      ['report', 3, 0]
    ]);
    const { nodeWidth, nodeHeight, nodeGap, rowGap, margin } = GRAPH_SIZES;
    expect(layout.width).toBe(2 * margin + 2 * nodeWidth + nodeGap);
    expect(layout.height).toBe(2 * margin + 4 * nodeHeight + 3 * rowGap);
  });

  it('fits two nodes side by side in the 240 px sidebar', () => {
    const { width } = layoutGraph(FIVE);
    expect(width).toBeLessThanOrEqual(240);
  });

  it('places rows top to bottom, centres a narrow row and never overlaps two nodes', () => {
    const { nodes } = layoutGraph(FIVE);
    const at = Object.fromEntries(nodes.map(n => [n.id, n]));
    expect(at['ingest'].y + at['ingest'].height).toBeLessThan(at['features-a'].y);
    expect(at['features-a'].y).toBe(at['features-b'].y);
    expect(at['features-a'].x + at['features-a'].width).toBeLessThanOrEqual(at['features-b'].x);
    expect(at['train'].y + at['train'].height).toBeLessThan(at['report'].y);
    // a one-node row sits in the middle of the two-node one
    const middle = (at['features-a'].x + at['features-b'].x + GRAPH_SIZES.nodeWidth) / 2;
    expect(at['ingest'].x + GRAPH_SIZES.nodeWidth / 2).toBe(middle);
    expect(at['train'].x).toBe(at['ingest'].x);
  });

  it('draws each edge from the bottom middle of the need to the top middle of the step', () => {
    const { nodes, edges } = layoutGraph(FIVE.slice(0, 2));
    const [from, to] = nodes;
    const path = edges[0].path;
    expect(path.startsWith(`M ${from.x + from.width / 2} ${from.y + from.height} C`)).toBe(true);
    expect(path.endsWith(`${to.x + to.width / 2} ${to.y}`)).toBe(true);
  });

  it('is empty without steps', () => {
    expect(layoutGraph([])).toEqual({ nodes: [], edges: [], rows: [], width: 0, height: 0 });
  });
});

describe('how runs and steps read', () => {
  it("shows the service's duration, a running step's so far, a dash before it starts", () => {
    expect(stepDuration(step('a', 'succeeded', { duration_seconds: 65 }))).toBe('1 min 5 s');
    const now = new Date('2026-01-01T00:00:42Z');
    expect(stepDuration(step('a', 'running', { started_at: '2026-01-01T00:00:00Z' }), now)).toBe(
      '42 s'
    );
    expect(stepDuration(step('a', 'pending'))).toBe('–');
  });

  it('counts the steps by state', () => {
    const run = {
      steps: [
        step('a', 'succeeded'),
        step('b', 'reused'),
        step('c', 'failed'),
        step('d', 'skipped'),
        step('e', 'running')
      ]
    };
    expect(stepCounts(run)).toBe('2 of 5 steps done, 1 running, 1 failed, 1 skipped');
    expect(stepCounts({ steps: [step('a', 'pending')] })).toBe('0 of 1 step done, 1 pending');
  });

  it('offers Cancel on a running run and Repair on a failed or cancelled one', () => {
    const as = (status: IPipelineRun['status']) => ({ status });
    expect(canCancel(as('running'))).toBe(true);
    expect(isRunActive(as('running'))).toBe(true);
    expect(canRepair(as('running'))).toBe(false);
    for (const ended of ['succeeded', 'failed', 'cancelled'] as const) {
      expect(canCancel(as(ended))).toBe(false);
      expect(isRunActive(as(ended))).toBe(false);
    }
    expect(canRepair(as('failed'))).toBe(true);
    expect(canRepair(as('cancelled'))).toBe(true);
    expect(canRepair(as('succeeded'))).toBe(false);
    expect(isRunActive(null)).toBe(false);
  });

  it("splits the service's message into its file:line lines", () => {
    expect(
      messageLines('churn/pipeline.yaml:4:5: nope is not a step\n\nchurn/pipeline.yaml:7:1: x\n')
    ).toEqual(['churn/pipeline.yaml:4:5: nope is not a step', 'churn/pipeline.yaml:7:1: x']);
  });
});

describe('the Run form', () => {
  const declared = { rows: 4, region: 'eu', flags: [1, 2], on: true };

  it('starts each input at its default, strings bare and the rest as JSON', () => {
    expect(pipelineParameterTexts(declared)).toEqual({
      rows: '4',
      region: 'eu',
      flags: '[1,2]',
      on: 'true'
    });
  });

  it('sends only what changed, strings as typed and the rest read as JSON', () => {
    const texts = { ...pipelineParameterTexts(declared), rows: '10', region: '12' };
    expect(pipelineParameterValues(declared, texts)).toEqual({
      ok: true,
      values: { rows: 10, region: '12' }
    });
    expect(pipelineParameterValues(declared, pipelineParameterTexts(declared))).toEqual({
      ok: true,
      values: {}
    });
  });

  it('names every parameter that is not JSON', () => {
    const texts = { ...pipelineParameterTexts(declared), rows: 'ten', on: 'yes' };
    const read = pipelineParameterValues(declared, texts);
    expect(read.ok).toBe(false);
    if (!read.ok) {
      expect(read.errors).toHaveLength(2);
      expect(read.errors[0]).toMatch(/^rows must be a JSON value like its default 4/);
      expect(read.errors[1]).toMatch(/^on must be/);
    }
  });
});

describe('pipeline triggers in words', () => {
  it('says each kind in a line', () => {
    expect(
      describePipelineTrigger({ kind: 'cron', expression: '0 6 * * *', timezone: 'Europe/Paris' })
    ).toBe('0 6 * * * (Europe/Paris)');
    expect(
      describePipelineTrigger({ kind: 'file', glob: 'data/*.csv', debounce_seconds: 0.5 })
    ).toBe('new files matching data/*.csv, 0.5 s quiet');
    expect(describePipelineTrigger({ kind: 'file', glob: 'in/**', debounce_seconds: 30 })).toBe(
      'new files matching in/**, 30 s quiet'
    );
    expect(describePipelineTrigger({ kind: 'file', glob: 'in/*.json' })).toBe(
      'new files matching in/*.json'
    );
    expect(describePipelineTrigger({ kind: 'webhook' }, 'api/webhooks/j9')).toBe(
      'webhook: POST api/webhooks/j9'
    );
    expect(describePipelineTrigger({ kind: 'webhook' })).toBe('webhook');
    expect(describePipelineTrigger({ kind: 'after_job', upstream_job_id: 'j42' })).toBe(
      'after job j42'
    );
    expect(describePipelineTrigger({ kind: 'after_pipeline', pipeline: 'ingest' })).toBe(
      'after pipeline ingest'
    );
    // a kind this panel does not know yet still reads as something
    expect(describePipelineTrigger({ kind: 'queue' } as unknown as IPipelineTrigger)).toBe(
      'queue trigger'
    );
  });

  it("lists the pipeline's triggers in its file's order, the webhook with its URL", () => {
    const pipeline = {
      triggers: [{ kind: 'webhook' }, { kind: 'cron', expression: '*/5 * * * *', timezone: 'UTC' }],
      webhook_url: 'api/webhooks/abc'
    } as unknown as Pick<IPipeline, 'triggers' | 'webhook_url'>;
    expect(pipelineTriggerLines(pipeline)).toEqual([
      { kind: 'webhook', text: 'webhook: POST api/webhooks/abc' },
      { kind: 'cron', text: '*/5 * * * * (UTC)' }
    ]);
    expect(pipelineTriggerLines({ webhook_url: null })).toEqual([]);
  });
});
