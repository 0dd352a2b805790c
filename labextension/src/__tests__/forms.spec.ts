import { describe, expect, it } from 'vitest';

import type { ISchedulerProfile } from '../api/types';
import { deployLine, initialProfile, scheduleRequest } from '../logic/forms';
import { parseParametersCell } from '../logic/parameters';

describe('scheduleRequest', () => {
  const declared = parseParametersCell('city = "Berlin"\nn: int = 3\n');
  const values = {
    name: 'daily-report',
    cron: ' 0  6 * * * ',
    timezone: 'Europe/Berlin',
    profile: 'small',
    params: { city: 'Berlin', n: '3' }
  };

  it('builds the POST /jobs body with the service’s field names', () => {
    expect(
      scheduleRequest(
        { ...values, params: { city: 'Paris', n: '3' } },
        'reports/daily.ipynb',
        declared
      )
    ).toEqual({
      ok: true,
      body: {
        name: 'daily-report',
        source_path: 'reports/daily.ipynb',
        profile: 'small',
        parameters: { city: 'Paris' },
        triggers: [{ kind: 'cron', expression: '0 6 * * *', timezone: 'Europe/Berlin' }]
      }
    });
  });

  it('lists every problem at once', () => {
    const result = scheduleRequest(
      {
        name: 'Daily Report',
        cron: '61 * * * *',
        timezone: 'UTC',
        profile: '',
        params: { n: 'x' }
      },
      'a.ipynb',
      declared
    );
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors).toHaveLength(4);
      expect(result.errors[0]).toContain("job name 'Daily Report'");
      expect(result.errors[1]).toContain("'61 * * * *' is not valid");
      expect(result.errors[2]).toContain('profile');
      expect(result.errors[3]).toContain('whole number');
    }
  });

  it('refuses a six-field cron and an unknown zone', () => {
    const six = scheduleRequest({ ...values, cron: '0 0 6 * * *' }, 'a.ipynb', declared);
    expect(six.ok).toBe(false);
    const tz = scheduleRequest({ ...values, timezone: 'Berlin' }, 'a.ipynb', declared);
    expect(tz).toEqual({
      ok: false,
      errors: ["unknown time zone 'Berlin': use an IANA name such as 'Europe/Paris' or 'UTC'"]
    });
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
