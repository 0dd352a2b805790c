/**
 * Names: the defaults match ``%schedule``'s (vectors computed with
 * server_ext.clients.scheduler.jobs.default_job_name), the checks match the services'.
 */
import { describe, expect, it } from 'vitest';

import {
  checkDeploymentName,
  checkJobName,
  checkProfileSlug,
  classifyModelRef,
  defaultDeploymentName,
  defaultJobName,
  pathStem,
  safeSlug
} from '../logic/names';

describe('defaultJobName', () => {
  const vectors: [string, string][] = [
    ['reports/daily-report.ipynb', 'daily-report'],
    ['Sales.ipynb', 'sales'],
    ['My Report.ipynb', 'my-report-9110ab62'],
    ['2024-report.ipynb', 'x-2024-report-64f620f9'],
    ['Über Straße.ipynb', 'uber-stra-e-b1a29f7a'],
    ['a.b.ipynb', 'a-b-2e7336dc'],
    ['x'.repeat(70) + '.ipynb', 'x'.repeat(54) + '-c71bd109'],
    ['--weird--.ipynb', 'weird-f0fde72d'],
    ['données/Été 2024.ipynb', 'ete-2024-17026537'],
    ['café.ipynb', 'cafe-850f7dc4'],
    ['a--b.ipynb', 'a-b-90827a2e'],
    ['-lead.ipynb', 'lead-54e05a0b']
  ];
  for (const [path, expected] of vectors) {
    it(`${path} → ${expected}`, () => {
      expect(defaultJobName(path)).toBe(expected);
      expect(checkJobName(defaultJobName(path))).toBeNull();
    });
  }

  it('has a name for a nameless notebook', () => {
    expect(defaultJobName('')).toBe('notebook');
  });
});

describe('pathStem and safeSlug', () => {
  it('drops only the last suffix, like PurePosixPath.stem', () => {
    expect(pathStem('a/b/report.v2.ipynb')).toBe('report.v2');
    expect(pathStem('.hidden')).toBe('.hidden');
    expect(pathStem('dir/')).toBe('dir');
  });

  it('keeps a simple name and refuses an empty one', () => {
    expect(safeSlug('abc')).toBe('abc');
    expect(() => safeSlug('')).toThrow();
  });
});

describe('checkJobName', () => {
  it('accepts slugs up to 63 characters', () => {
    expect(checkJobName('daily-report')).toBeNull();
    expect(checkJobName('a')).toBeNull();
    expect(checkJobName('1st-run')).toBeNull();
    expect(checkJobName('a'.repeat(63))).toBeNull();
  });

  it('refuses what the service refuses, with its example', () => {
    for (const bad of ['', 'Daily', 'daily_report', '-daily', 'daily-', 'a'.repeat(64), 'a b']) {
      expect(checkJobName(bad)).toContain("e.g. 'daily-report'");
    }
  });
});

describe('checkDeploymentName', () => {
  it('accepts lowercase letters, digits and single dashes up to 40', () => {
    expect(checkDeploymentName('churn-model')).toBeNull();
    expect(checkDeploymentName('0model')).toBeNull();
    expect(checkDeploymentName('a'.repeat(40))).toBeNull();
  });

  it('refuses double dashes, a trailing dash, capitals and length over 40', () => {
    for (const bad of ['churn--model', 'churn-', '-churn', 'Churn', 'a'.repeat(41), '', 'a_b']) {
      expect(checkDeploymentName(bad)).toContain("'churn-model'");
    }
  });

  it('suggests a valid name from the notebook', () => {
    expect(defaultDeploymentName('models/Churn Model (v2).ipynb')).toBe('churn-model-v2');
    expect(defaultDeploymentName('___.ipynb')).toBe('model');
    expect(checkDeploymentName(defaultDeploymentName('x'.repeat(60) + '.ipynb'))).toBeNull();
  });
});

describe('classifyModelRef', () => {
  it('tells variables, run ids and registry versions apart', () => {
    expect(classifyModelRef('model')).toEqual({ kind: 'variable' });
    expect(classifyModelRef('clf_2')).toEqual({ kind: 'variable' });
    expect(classifyModelRef('0123456789abcdef0123456789abcdef')).toEqual({ kind: 'run' });
    expect(classifyModelRef('models:/alice-churn/3')).toEqual({ kind: 'registry' });
  });

  it('explains what is wrong', () => {
    expect(classifyModelRef('models:/alice-churn')).toHaveProperty('error');
    expect(classifyModelRef('models:/alice-churn/0')).toHaveProperty('error');
    expect(classifyModelRef('my model')).toHaveProperty('error');
    expect(classifyModelRef('class')).toHaveProperty('error'); // a keyword
    expect(classifyModelRef('2model')).toHaveProperty('error');
    expect(classifyModelRef('')).toHaveProperty('error');
  });

  it('checks profile slugs, allowing none', () => {
    expect(checkProfileSlug('')).toBeNull();
    expect(checkProfileSlug('gpu-small')).toBeNull();
    expect(checkProfileSlug('GPU')).not.toBeNull();
  });
});
