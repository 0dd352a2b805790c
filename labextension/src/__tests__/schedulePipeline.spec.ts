import { describe, expect, it } from 'vitest';

import {
  choiceLabel,
  cronTriggerItem,
  folderOf,
  pipelineChoices,
  pipelineName,
  stepOfNotebook,
  withCronTrigger
} from '../logic/schedulePipeline';

const CHURN = `# yaml-language-server: $schema=../pipeline.schema.json
name: churn   # the daily model
profile: tiny
parameters:
  rows: 3
steps:
  ingest:
    notebook: ingest.ipynb
    outputs: {rows: integer}
  train: {notebook: "notebooks/train.ipynb", needs: [ingest]}
  deploy:
    type: deploy
    needs: [train]
    model: steps.train.outputs.model_uri
    name: churn
`;

describe('the pipeline choices of the Schedule dialog', () => {
  it('reads the name and the step that runs the notebook, block or flow', () => {
    expect(folderOf('churn/train.ipynb')).toBe('churn');
    expect(folderOf('top.ipynb')).toBe('');
    expect(pipelineName(CHURN)).toBe('churn');
    expect(pipelineName("name: 'quoted'\n")).toBe('quoted');
    expect(pipelineName('steps: {}\n')).toBeNull();
    expect(stepOfNotebook(CHURN, 'churn', 'churn/ingest.ipynb')).toBe('ingest');
    expect(stepOfNotebook(CHURN, 'churn', 'churn/notebooks/train.ipynb')).toBe('train');
    expect(stepOfNotebook(CHURN, '', 'notebooks/train.ipynb')).toBe('train');
    // another folder's notebook of the same name, and a notebook no step runs
    expect(stepOfNotebook(CHURN, 'churn', 'other/ingest.ipynb')).toBeNull();
    expect(stepOfNotebook(CHURN, 'churn', 'churn/explore.ipynb')).toBeNull();
  });

  it('offers the folder’s pipeline files, those running the notebook first', () => {
    const choices = pipelineChoices('churn/train.ipynb', [
      { path: 'churn/a.pipeline.yaml', text: 'name: other\nsteps:\n  x: {notebook: x.ipynb}\n' },
      { path: 'churn/pipeline.yaml', text: CHURN.replace('notebooks/train', 'train') },
      { path: 'churn/notes.yaml', text: 'name: not-a-pipeline-file\n' }
    ]);
    expect(choices).toEqual([
      { path: 'churn/pipeline.yaml', name: 'churn', step: 'train' },
      { path: 'churn/a.pipeline.yaml', name: 'other', step: null }
    ]);
    expect(choiceLabel(choices[0])).toBe('The pipeline churn (its step train)');
    expect(choiceLabel(choices[1])).toBe('The pipeline other (churn/a.pipeline.yaml)');
    expect(choiceLabel({ path: 'p/pipeline.yaml', name: null, step: null })).toBe(
      'The pipeline p/pipeline.yaml'
    );
  });
});

describe('the cron trigger written into the pipeline file', () => {
  const item = cronTriggerItem(' 30 7 * * 1-5 ', 'Europe/Paris');

  it('is a flow mapping whose strings YAML reads as written', () => {
    expect(item).toBe('{kind: cron, expression: "30 7 * * 1-5", timezone: "Europe/Paris"}');
  });

  it('adds a triggers list to a file without one, keeping every line', () => {
    const edited = withCronTrigger(CHURN, '30 7 * * 1-5', 'Europe/Paris');
    expect(edited).toEqual({ ok: true, text: `${CHURN}triggers:\n  - ${item}\n` });
    // no final newline, and CRLF lines, are kept as they were
    const crlf = CHURN.trimEnd().replace(/\n/g, '\r\n');
    const again = withCronTrigger(crlf, '30 7 * * 1-5', 'Europe/Paris');
    expect(again).toEqual({ ok: true, text: `${crlf}\r\ntriggers:\r\n  - ${item}\r\n` });
  });

  it('replaces the cron triggers of a list and keeps the others in place', () => {
    const text = [
      'name: churn',
      'triggers:   # what starts it',
      '    - kind: cron',
      '      expression: "0 6 * * *"',
      '',
      '    - {kind: webhook}',
      '    # new files too',
      "    - {kind: 'cron', expression: '0 1 * * *'}",
      '    - kind: file',
      '      glob: "churn/inbox/*.csv"',
      'steps:',
      '  a: {notebook: a.ipynb}',
      ''
    ].join('\n');
    const edited = withCronTrigger(text, '30 7 * * 1-5', 'Europe/Paris');
    expect(edited).toEqual({
      ok: true,
      text: [
        'name: churn',
        'triggers:   # what starts it',
        `    - ${item}`,
        '',
        '    - {kind: webhook}',
        '    # new files too',
        '    - kind: file',
        '      glob: "churn/inbox/*.csv"',
        'steps:',
        '  a: {notebook: a.ipynb}',
        ''
      ].join('\n')
    });
  });

  it('fills an empty list, and a list at the key’s own indentation', () => {
    expect(withCronTrigger('name: p\ntriggers: []\nsteps: {}\n', '0 6 * * *', 'UTC')).toEqual({
      ok: true,
      text: `name: p\ntriggers:\n  - ${cronTriggerItem('0 6 * * *', 'UTC')}\nsteps: {}\n`
    });
    const flush = 'triggers:\n- {kind: cron, expression: "0 1 * * *"}\n- {kind: webhook}\n';
    expect(withCronTrigger(flush, '0 6 * * *', 'UTC')).toEqual({
      ok: true,
      text: `triggers:\n- ${cronTriggerItem('0 6 * * *', 'UTC')}\n- {kind: webhook}\n`
    });
  });

  it('refuses a non-empty list written on one line, saying what to do', () => {
    const edited = withCronTrigger('triggers: [{kind: webhook}]\n', '0 6 * * *', 'UTC');
    expect(edited.ok).toBe(false);
    expect(!edited.ok && edited.error).toMatch(
      /^The triggers of this file are written on one line \(\[\{kind: webhook\}\]\): write them as a list/
    );
  });
});
