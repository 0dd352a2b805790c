import { describe, expect, it } from 'vitest';

import type { ILineage } from '../api/types';
import {
  cellHead,
  ILineageRow,
  inputSource,
  lineageSections,
  missingLines,
  missingReason,
  parameterText,
  runRows,
  shortSha
} from '../logic/lineage';

const SHA = 'a'.repeat(12) + 'b'.repeat(52);
const RUN_ID = '0123456789abcdef0123456789abcdef';

const VERSION: ILineage['version'] = {
  owner: 'alice',
  name: 'churn',
  version: 3,
  model_uri: 'models:/churn/7',
  state: 'ready',
  created_at: '2026-12-07T10:00:00Z'
};

/** A version deployed from step ``train`` of a pipeline run, with one input file. */
const FULL: ILineage = {
  version: VERSION,
  model_version: { name: 'churn', version: '7', run_id: RUN_ID },
  mlflow_run: {
    run_id: RUN_ID,
    experiment_id: '1',
    status: 'FINISHED',
    params: { n_estimators: '100', depth: '4' },
    metrics: { auc: 0.912345, rows: 1000 },
    notebook: 'churn/train.ipynb',
    cell_source: ['%%track', 'model = fit(df)', 'a', 'b', 'c', 'd', 'e', 'f'].join('\n'),
    git_commit: '9f8e7d6c5b4a39281706f5e4d3c2b1a098765432',
    git_dirty: 'true',
    env: 'python-3.12',
    env_digest: 'sha256:' + 'c'.repeat(64),
    tags: {}
  },
  scheduler_run: {
    id: 'run-train-1',
    job_id: 'pipeline-step',
    status: 'succeeded',
    parameters: { rows: 1000 },
    notebook_digest: 'sha256:' + SHA,
    env_digest: null,
    mlflow_run_id: RUN_ID,
    started_at: null,
    ended_at: null
  },
  pipeline_run: {
    id: 'pr-0123456789abcdef',
    pipeline_id: 'p1',
    pipeline_name: 'churn-daily',
    status: 'succeeded',
    parameters: { region: 'eu', rows: 1000 },
    created_at: null,
    ended_at: null,
    step: { step: 'train', status: 'succeeded', run_id: 'run-train-1', outputs: {} }
  },
  notebook: {
    path: 'churn/train.ipynb',
    digest: 'sha256:' + SHA,
    parameters: { rows: 1000, region: 'eu' }
  },
  inputs: [
    { path: 'data/customers.csv', sha256: SHA, source: 'trigger' },
    { path: 'features.parquet', sha256: null, source: 'step:features/table' }
  ],
  missing: []
};

function section(lineage: ILineage, link: string) {
  const found = lineageSections(lineage).find(s => s.link === link);
  if (!found) {
    throw new Error(`no section ${link}`);
  }
  return found;
}

function row(rows: ILineageRow[], label: string): ILineageRow {
  const found = rows.find(r => r.label === label);
  if (!found) {
    throw new Error(`no row ${label} in ${rows.map(r => r.label).join(', ')}`);
  }
  return found;
}

describe('lineageSections', () => {
  it('reads the chain in order: version, model, run, pipeline run, notebook, inputs', () => {
    expect(lineageSections(FULL).map(s => s.link)).toEqual([
      'version',
      'model_version',
      'mlflow_run',
      'pipeline_run',
      'notebook',
      'inputs'
    ]);
    expect(lineageSections(FULL).every(s => s.missing === undefined)).toBe(true);
  });

  it('names the version and the registered model, with the run id short and full', () => {
    expect(section(FULL, 'version').title).toBe('Version v3 of churn');
    const model = section(FULL, 'model_version');
    expect(model.title).toBe('Registered model churn version 7');
    expect(row(model.rows, 'Made by run')).toMatchObject({ value: '01234567', title: RUN_ID });
  });

  it("shows the run's metrics, params, git commit, environment, notebook and cell head", () => {
    const run = section(FULL, 'mlflow_run');
    expect(row(run.rows, 'metric auc').value).toBe('0.9123');
    expect(row(run.rows, 'metric rows').value).toBe('1000');
    expect(row(run.rows, 'param depth').value).toBe('4');
    expect(row(run.rows, 'Git commit')).toMatchObject({
      value: '9f8e7d6c5b (uncommitted changes)',
      title: FULL.mlflow_run?.git_commit
    });
    expect(row(run.rows, 'Environment')).toMatchObject({
      value: `python-3.12 sha256:${'c'.repeat(12)}`,
      title: FULL.mlflow_run?.env_digest
    });
    expect(row(run.rows, 'Notebook').value).toBe('churn/train.ipynb');
    expect(row(run.rows, 'Status').value).toBe('finished');
    expect(run.cell).toBe('%%track\nmodel = fit(df)\na\nb\nc\nd\n… (2 more lines)');
  });

  it('shows the pipeline run with its step, and its parameters sorted', () => {
    const pipeline = section(FULL, 'pipeline_run');
    expect(row(pipeline.rows, 'Pipeline').value).toBe('churn-daily');
    expect(row(pipeline.rows, 'Step').value).toBe('train');
    expect(row(pipeline.rows, 'Step run').value).toBe('run-train-1');
    expect(row(pipeline.rows, 'Run')).toMatchObject({
      value: 'pr-01234',
      title: 'pr-0123456789abcdef'
    });
    const params = pipeline.rows.filter(r => r.label.startsWith('param '));
    expect(params.map(r => `${r.label}=${r.value}`)).toEqual([
      'param region="eu"',
      'param rows=1000'
    ]);
  });

  it('shows the scheduler run when the notebook ran as a job, not in a pipeline', () => {
    const job: ILineage = { ...FULL, pipeline_run: null };
    const links = lineageSections(job).map(s => s.link);
    expect(links).toContain('scheduler_run');
    expect(links).not.toContain('pipeline_run');
    expect(row(section(job, 'scheduler_run').rows, 'Job').value).toBe('pipeline-step');
  });

  it('shows the snapshot digest short with the full one in the title', () => {
    const notebook = section(FULL, 'notebook');
    expect(row(notebook.rows, 'Digest')).toMatchObject({
      value: 'sha256:aaaaaaaaaaaa',
      title: `sha256:${SHA}`
    });
    expect(row(notebook.rows, 'param region').value).toBe('"eu"');
  });

  it('lists the input files with short digests, the full digest and origin in the title', () => {
    const inputs = section(FULL, 'inputs');
    expect(inputs.title).toBe('Input files (2)');
    expect(row(inputs.rows, 'data/customers.csv')).toMatchObject({
      value: 'aaaaaaaaaaaa',
      title: `${SHA} (a file that started the run)`
    });
    expect(row(inputs.rows, 'features.parquet')).toMatchObject({
      value: '–',
      title: 'no SHA-256 recorded (left by step features)'
    });
  });

  it("puts the deployer's reason where a link is missing (a version deployed by hand)", () => {
    const byHand: ILineage = {
      version: { ...VERSION, model_uri: '/models/churn' },
      model_version: null,
      mlflow_run: null,
      scheduler_run: null,
      pipeline_run: null,
      notebook: null,
      inputs: [],
      missing: [
        { link: 'model_version', reason: 'The model URI is not a registered model.' },
        { link: 'mlflow_run', reason: 'No run recorded.' },
        { link: 'scheduler_run', reason: 'Not deployed from a scheduled run.' }
      ]
    };
    const sections = lineageSections(byHand);
    expect(sections.map(s => [s.link, s.missing])).toEqual([
      ['version', undefined],
      ['model_version', 'The model URI is not a registered model.'],
      ['mlflow_run', 'No run recorded.'],
      ['pipeline_run', 'Not deployed from a scheduled run.'],
      ['notebook', 'Not known.'],
      ['inputs', 'None recorded.']
    ]);
    expect(missingLines(byHand)).toEqual([
      'Registered model: The model URI is not a registered model.',
      'MLflow run: No run recorded.',
      'Scheduler run: Not deployed from a scheduled run.'
    ]);
  });
});

describe('helpers', () => {
  it('cellHead keeps short cells whole and drops trailing blank lines', () => {
    expect(cellHead('a\nb\n\n')).toBe('a\nb');
    expect(cellHead(null)).toBe('');
    expect(cellHead('1\n2\n3', 2)).toBe('1\n2\n… (1 more line)');
  });

  it('shortSha keeps the full digest in the title, and a dash for none', () => {
    expect(shortSha(SHA)).toEqual({ value: 'aaaaaaaaaaaa', title: SHA });
    expect(shortSha(null)).toEqual({ value: '–' });
  });

  it('parameterText writes values as JSON', () => {
    expect(parameterText('eu')).toBe('"eu"');
    expect(parameterText(0.5)).toBe('0.5');
    expect(parameterText([1, 2])).toBe('[1,2]');
    expect(parameterText(undefined)).toBe('–');
  });

  it('missingReason joins the reasons of one link', () => {
    const missing = [
      { link: 'inputs' as const, reason: 'One.' },
      { link: 'inputs' as const, reason: 'Two.' }
    ];
    expect(missingReason(missing, 'inputs')).toBe('One. Two.');
    expect(missingReason(missing, 'notebook')).toBeUndefined();
  });

  it('inputSource says where a file came from', () => {
    expect(inputSource('trigger')).toBe('a file that started the run');
    expect(inputSource('step:prep/x.csv')).toBe('left by step prep');
    expect(inputSource('other')).toBe('other');
  });

  it('runRows leaves out what the run does not record', () => {
    const rows = runRows({
      run_id: RUN_ID,
      experiment_id: null,
      status: null,
      notebook: null,
      cell_source: null,
      git_commit: null,
      git_dirty: null,
      env: null,
      env_digest: null
    });
    expect(rows.map(r => r.label)).toEqual(['Run']);
  });
});
