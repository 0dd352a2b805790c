import { describe, expect, it } from 'vitest';

import type { IPipeline, IPipelineStepDefinition } from '../api/types';
import {
  isPipelineFile,
  pipelineToUpdate,
  scheduledPipeline,
  stepLine,
  takenPipelineName
} from '../logic/pipelineFile';

function step(
  id: string,
  needs: string[] = [],
  extra: Partial<IPipelineStepDefinition> = {}
): IPipelineStepDefinition {
  return {
    id,
    type: 'notebook',
    notebook: `${id}.ipynb`,
    job_id: `job-${id}`,
    needs,
    run_if: 'all_succeeded',
    profile: null,
    ...extra
  };
}

const PIPELINE = {
  id: 'p1',
  owner: 'alice',
  name: 'churn',
  description: '',
  source_path: 'churn/pipeline.yaml',
  digest: 'sha256:0',
  parameters: {},
  steps: [
    step('ingest'),
    step('features-a', ['ingest']),
    step('features-b', ['ingest']),
    step('train', ['features-a', 'features-b'], { profile: 'gpu' }),
    step('report', ['train'], { run_if: 'all_done' })
  ],
  triggers: [
    { kind: 'cron', expression: '0 6 * * *', timezone: 'UTC' },
    { kind: 'file', glob: 'data/*.csv', debounce_seconds: 0.5 }
  ],
  paused: false,
  webhook_url: null,
  webhook_secret: null,
  version: 1,
  created_at: '2026-01-01T00:00:00Z',
  updated_at: '2026-01-01T00:00:00Z'
} as unknown as IPipeline;

describe('isPipelineFile', () => {
  it('offers the command on pipeline.yaml and *.pipeline.yaml only', () => {
    expect(isPipelineFile('pipeline.yaml')).toBe(true);
    expect(isPipelineFile('churn.pipeline.yaml')).toBe(true);
    expect(isPipelineFile('.pipeline.yaml')).toBe(false);
    expect(isPipelineFile('pipeline.yml')).toBe(false);
    expect(isPipelineFile('my-pipeline.yaml')).toBe(false);
    expect(isPipelineFile('pipeline.yaml.bak')).toBe(false);
    expect(isPipelineFile(null)).toBe(false);
  });
});

describe('the pipeline a 409 refers to', () => {
  const conflict =
    "you have a pipeline named 'churn' (p1): update it (PUT api/pipelines/<id>) or give this one another name";
  const other = { ...PIPELINE, id: 'p2', name: 'other', source_path: 'other/pipeline.yaml' };

  it("reads the name from the scheduler's message", () => {
    expect(takenPipelineName(conflict)).toBe('churn');
    expect(takenPipelineName('something else')).toBeNull();
  });

  it('finds the pipeline by that name, even when it was read from another file', () => {
    expect(pipelineToUpdate([other, PIPELINE], conflict, 'elsewhere/pipeline.yaml')?.id).toBe('p1');
  });

  it('falls back to the pipeline read from the same file, and to none', () => {
    expect(pipelineToUpdate([other], 'taken', 'other/pipeline.yaml')?.id).toBe('p2');
    expect(pipelineToUpdate([other], conflict, 'churn/pipeline.yaml')).toBeNull();
  });
});

describe('scheduledPipeline', () => {
  it('lists the steps in run order with what they need, when and where they run', () => {
    expect(scheduledPipeline(PIPELINE, false).steps).toEqual([
      'ingest: ingest.ipynb',
      'features-a: features-a.ipynb, after ingest',
      'features-b: features-b.ipynb, after ingest',
      'train: train.ipynb, after features-a and features-b, profile gpu',
      'report: report.ipynb, after train, when all done'
    ]);
  });

  it('says a step that runs a job by its job', () => {
    expect(stepLine(step('deploy', [], { notebook: null, job_id: 'j9' }))).toBe('deploy: job j9');
  });

  it('describes the triggers as the Pipelines section does, and what happens next', () => {
    const result = scheduledPipeline(PIPELINE, false);
    expect(result.title).toBe('Pipeline churn scheduled');
    expect(result.triggers).toEqual([
      expect.stringContaining('0 6 * * *'),
      'new files matching data/*.csv, 0.5 s quiet'
    ]);
    expect(result.note).toMatch(/^Its triggers start runs from now on/);
  });

  it('says an update, a paused pipeline and one without triggers', () => {
    const updated = scheduledPipeline({ ...PIPELINE, version: 3, paused: true }, true);
    expect(updated.title).toBe('Pipeline churn updated (version 3)');
    expect(updated.note).toMatch(/^It is paused/);
    expect(updated.note).toMatch(/Runs already started keep the definition/);
    const none = scheduledPipeline({ ...PIPELINE, triggers: [] }, false);
    expect(none.triggers).toEqual([]);
    expect(none.note).toBe('It has no triggers: start its runs with Run in the Shipyard panel.');
  });
});
