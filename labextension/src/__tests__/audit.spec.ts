/**
 * The Audit section's pure state: queries from the form, pages, the 403 that hides the
 * section, record wording, and the verification's summary.
 */
import { describe, expect, it } from 'vitest';

import type { IAuditRecord, IAuditVerify } from '../api/types';
import {
  actionSuggestions,
  AUDIT_PAGE,
  auditQuery,
  auditVisible,
  describeActor,
  emptyMessage,
  errorAdvice,
  formatAuditTime,
  hasFilters,
  INITIAL_AUDIT,
  isDenied,
  NO_FILTERS,
  startLoad,
  startVerify,
  verifySummary,
  withLoadError,
  withPage,
  withVerify,
  withVerifyError
} from '../logic/audit';

const record = (seq: number, action: string, extra: Partial<IAuditRecord> = {}) =>
  ({
    seq,
    __timestamp__: '2026-12-06T16:05:03.123456Z',
    action,
    actor: 'root',
    actor_kind: 'user',
    on_behalf_of: null,
    target: `user/u${seq}`,
    owner: null,
    outcome: 'allowed',
    reason: null,
    client: '127.0.0.1',
    prev_hash: 'a'.repeat(64),
    hash: 'b'.repeat(64),
    ...extra
  }) as IAuditRecord;

const admin = { ...INITIAL_AUDIT, admin: true };

describe('auditQuery', () => {
  it('sends only the filters that are set, trimmed, with the page size', () => {
    expect(auditQuery(NO_FILTERS)).toEqual({ limit: AUDIT_PAGE });
    expect(auditQuery({ user: ' alice ', action: 'server', since: '' })).toEqual({
      limit: AUDIT_PAGE,
      user: 'alice',
      action: 'server'
    });
    expect(auditQuery({ user: '', action: '', since: '2h' }, 120, 10)).toEqual({
      limit: 10,
      since: '2h',
      before: 120
    });
  });

  it('passes what the service must judge as it was typed (no client-side rules)', () => {
    // an unknown action or a bad time is the service's to refuse, with its message
    expect(auditQuery({ user: '', action: 'nonsense', since: 'yesterday' })).toMatchObject({
      action: 'nonsense',
      since: 'yesterday'
    });
  });

  it('knows whether any filter is set', () => {
    expect(hasFilters(NO_FILTERS)).toBe(false);
    expect(hasFilters({ user: '  ', action: '', since: '' })).toBe(false);
    expect(hasFilters({ user: '', action: 'job', since: '' })).toBe(true);
  });
});

describe('the section’s state', () => {
  it('is shown to admins until the service refuses', () => {
    expect(auditVisible(INITIAL_AUDIT)).toBe(false);
    expect(auditVisible(admin)).toBe(true);
    const refused = withLoadError(startLoad(admin, NO_FILTERS), 'for hub admins', 403, 5);
    expect(refused).toMatchObject({ admin: true, forbidden: true, records: [], status: 'idle' });
    expect(auditVisible(refused)).toBe(false);
    // a refused verification hides it the same way
    expect(auditVisible(withVerifyError(admin, 'for hub admins', 403))).toBe(false);
  });

  it('replaces records with a first page and appends older pages without doubles', () => {
    let s = startLoad(admin, { user: ' alice', action: '', since: '' });
    expect(s).toMatchObject({ status: 'loading', filters: { user: 'alice' } });
    s = withPage(s, { records: [record(9, 'a.b'), record(8, 'a.b')], next_before: 8 }, false, 1);
    expect(s).toMatchObject({ status: 'ok', nextBefore: 8, updated: 1, error: null });
    s = withPage(
      s,
      // seq 8 again (a record arrived in between is not an issue: paging is by seq)
      { records: [record(8, 'a.b'), record(7, 'a.b'), record(6, 'a.b')], next_before: null },
      true,
      2
    );
    expect(s.records.map(r => r.seq)).toEqual([9, 8, 7, 6]);
    expect(s.nextBefore).toBeNull();
    s = withPage(s, { records: [record(10, 'x.y')], next_before: null }, false, 3);
    expect(s.records.map(r => r.seq)).toEqual([10]);
  });

  it('keeps the records shown under a load error, with the status for advice', () => {
    const shown = withPage(admin, { records: [record(3, 'a.b')], next_before: null }, false, 1);
    const s = withLoadError(shown, "since='x' is not a time", 400, 2);
    expect(s).toMatchObject({
      status: 'error',
      errorStatus: 400,
      error: "since='x' is not a time"
    });
    expect(s.records).toHaveLength(1);
    expect(errorAdvice(400)).toBeNull();
    expect(errorAdvice(502)).toContain('SHIPYARD_AUDIT_SERVICE');
    expect(errorAdvice(0)).toContain('SHIPYARD_AUDIT_SERVICE');
    expect(errorAdvice(500)).toContain('shipyard audit list');
  });

  it('keeps the last verdict while a new verification runs', () => {
    const verdict: IAuditVerify = {
      ok: true,
      file_records: 2,
      table_records: 2,
      first_seq: 1,
      last_seq: 2,
      problems: []
    };
    const done = withVerify(admin, verdict);
    expect(done.verify).toEqual({ status: 'done', result: verdict, error: null });
    expect(startVerify(done).verify).toEqual({ status: 'running', result: verdict, error: null });
    expect(withVerifyError(done, 'Cannot reach the audit service', 502).verify).toEqual({
      status: 'error',
      result: null,
      error: 'Cannot reach the audit service'
    });
  });
});

describe('records in words', () => {
  it('names who acted, for whom, and marks refusals', () => {
    expect(describeActor(record(1, 'job.run'))).toBe('root');
    expect(describeActor(record(1, 'job.run', { actor: 'scheduler', on_behalf_of: 'alice' }))).toBe(
      'scheduler for alice'
    );
    expect(describeActor(record(1, 'login.failed', { actor: null }))).toBe('anonymous');
    expect(isDenied(record(1, 'audit.read', { outcome: 'denied' }))).toBe(true);
    expect(isDenied(record(1, 'job.run', { outcome: 'failed' }))).toBe(false);
  });

  it('gives times in UTC to the second', () => {
    expect(formatAuditTime('2026-12-06T16:05:03.123456+00:00')).toBe('2026-12-06 16:05:03 UTC');
    expect(formatAuditTime('2026-12-06T17:05:03+01:00')).toBe('2026-12-06 16:05:03 UTC');
    expect(formatAuditTime('not a time')).toBe('not a time');
    expect(formatAuditTime(null)).toBe('–');
  });

  it('suggests the families and actions shown', () => {
    expect(
      actionSuggestions([
        record(3, 'server.start'),
        record(2, 'user.create'),
        record(1, 'server.stop')
      ])
    ).toEqual(['server', 'server.start', 'server.stop', 'user', 'user.create']);
  });

  it('says how to see records when there are none', () => {
    expect(emptyMessage(NO_FILTERS)).toContain('No records yet');
    expect(emptyMessage({ user: 'bob', action: '', since: '' })).toContain('clear them');
  });
});

describe('verifySummary', () => {
  it('says an intact trail is intact, with its range', () => {
    const s = verifySummary({
      ok: true,
      file_records: 42,
      table_records: 42,
      first_seq: 1,
      last_seq: 42,
      problems: []
    });
    expect(s.headline).toBe(
      'Trail intact: 42 records (seq 1–42), every hash links to the one before, file and table agree.'
    );
    expect(s.problems).toEqual([]);
  });

  it('names the first broken record and lists every problem', () => {
    const s = verifySummary({
      ok: false,
      file_records: 41,
      table_records: 42,
      first_seq: 1,
      last_seq: 42,
      problems: [
        { where: 'file', seq: 17, kind: 'edited', message: 'its hash does not match its fields' },
        { where: 'both', seq: null, kind: 'malformed', message: 'line 3 is not JSON' }
      ]
    });
    expect(s.headline).toContain('Trail broken: 2 problems; the first at seq 17 (edited, file)');
    expect(s.headline).toContain('shipyard audit verify');
    expect(s.problems).toEqual([
      'seq 17 (file): edited: its hash does not match its fields',
      'no seq (both): malformed: line 3 is not JSON'
    ]);
  });
});
