import { describe, expect, it } from 'vitest';

import type { ISchedulerParameter, ISchedulerProfile } from '../api/types';
import {
  changedParameterTexts,
  deployLine,
  initialParameterTexts,
  initialProfile,
  scheduleRequest
} from '../logic/forms';

const declared: ISchedulerParameter[] = [
  { name: 'city', type: 'str', default: '"Berlin"', help: '', text: 'Berlin' },
  { name: 'n', type: 'int', default: '3', help: '', text: '3' },
  { name: 'when', type: null, default: 'today()', help: '', text: 'today()' }
];

describe('parameter texts', () => {
  it('start at the defaults as the service shows them', () => {
    expect(initialParameterTexts(declared)).toEqual({ city: 'Berlin', n: '3', when: 'today()' });
  });

  it('are sent to the service only when changed', () => {
    expect(changedParameterTexts(declared, { city: 'Berlin', n: '4', when: 'today()' })).toEqual({
      n: '4'
    });
    expect(changedParameterTexts(declared, { city: 'Paris', nope: 'x' })).toEqual({
      city: 'Paris'
    });
  });
});

describe('scheduleRequest', () => {
  const values = {
    name: 'daily-report',
    cron: ' 0  6 * * * ',
    timezone: ' Europe/Berlin ',
    profile: 'small',
    params: { city: 'Paris', n: '3' }
  };

  it('builds the POST /jobs body with the service’s field names', () => {
    expect(scheduleRequest(values, 'reports/daily.ipynb', { city: 'Paris' })).toEqual({
      ok: true,
      body: {
        name: 'daily-report',
        source_path: 'reports/daily.ipynb',
        profile: 'small',
        parameters: { city: 'Paris' },
        // the service normalises the expression's spaces and judges it
        triggers: [{ kind: 'cron', expression: '0  6 * * *', timezone: 'Europe/Berlin' }]
      }
    });
  });

  it('lists every problem at once, and leaves the cron and zone to the service', () => {
    const result = scheduleRequest(
      { ...values, name: 'Daily Report', cron: '61 * * * *', timezone: 'Berlin', profile: '' },
      'a.ipynb',
      {}
    );
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors).toHaveLength(2);
      expect(result.errors[0]).toContain("job name 'Daily Report'");
      expect(result.errors[1]).toContain('profile');
    }
  });
});

describe('initialProfile', () => {
  // typed by a cast: the 'old' profile below lacks ``available``, as an older scheduler's did
  const profile = (slug: string, extra: object = {}) =>
    ({
      slug,
      display_name: slug,
      description: '',
      environment: 'base',
      default: false,
      ...extra
    }) as ISchedulerProfile;
  const noGpu = { available: false, unavailable_reason: 'no GPU on this machine' };

  it("starts on the server's profile, else the default, else the first it can run", () => {
    const list = [profile('gpu', noGpu), profile('small', { default: true }), profile('big')];
    expect(initialProfile(list, 'big')).toBe('big');
    expect(initialProfile(list, null)).toBe('small');
    expect(initialProfile(list, 'gpu')).toBe('small');
    expect(initialProfile([profile('gpu', noGpu), profile('big')], null)).toBe('big');
    expect(initialProfile([profile('gpu', { ...noGpu, default: true })], 'x')).toBe('x');
    expect(initialProfile([profile('old')], null)).toBe('old'); // a scheduler without the field
  });
});

describe('deployLine', () => {
  it('writes the magic line, with a profile only when chosen', () => {
    expect(deployLine({ model: 'model', name: 'churn', profile: '' })).toEqual({
      ok: true,
      line: '%deploy model --name churn'
    });
    expect(
      deployLine({ model: ' models:/alice-churn/3 ', name: 'churn-model', profile: 'gpu-small' })
    ).toEqual({
      ok: true,
      line: '%deploy models:/alice-churn/3 --name churn-model --profile gpu-small'
    });
  });

  it('refuses anything that could add words to the line', () => {
    const result = deployLine({ model: 'model --delete churn', name: 'churn--x', profile: 'A B' });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors).toHaveLength(3);
    }
    expect(deployLine({ model: 'model', name: '', profile: '' })).toMatchObject({ ok: false });
  });
});
