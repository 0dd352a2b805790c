/**
 * The Audit section's state: pure functions of the audit service's answers.
 *
 * The section is for hub admins. It is shown when the server says its owner is an admin
 * (``admin`` of /shipyard/api/profile) and hidden for good once the service refuses
 * (403): the service alone decides who reads the trail, the panel only avoids asking for
 * everyone else. Records are loaded on demand (opening the panel, Apply, Load more,
 * the refresh button), never by the 5 s poll: every read of the trail is itself an
 * ``audit.read`` record, and a poll would fill the trail with them.
 *
 * Filters are passed to the service as typed (trimmed, empty ones left out): the service
 * checks them and its 400 says what to fix (STYLE: the service is the only judge of its
 * rules), so nothing here re-implements its action names or time formats.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/audit.spec.ts.
 */
import type { IAuditQuery, IAuditRecord, IAuditRecords, IAuditVerify } from '../api/types';

/** How many records one page asks for. */
export const AUDIT_PAGE = 50;

/** The filters of the section's form, as typed. */
export interface IAuditFilters {
  user: string;
  action: string;
  since: string;
}

export const NO_FILTERS: IAuditFilters = { user: '', action: '', since: '' };

/** The result of the last "Verify trail". */
export interface IVerifyState {
  status: 'idle' | 'running' | 'done' | 'error';
  result: IAuditVerify | null;
  error: string | null;
}

export interface IAuditState {
  /** The server's owner is a hub admin (as the server says). */
  admin: boolean;
  /** The service refused (403): the section stays hidden until JupyterLab reloads. */
  forbidden: boolean;
  /** ``idle`` until the first load is asked for. */
  status: 'idle' | 'loading' | 'ok' | 'error';
  /** Shown records, newest first. */
  records: IAuditRecord[];
  /** ``before`` of the next (older) page; null when there is none. */
  nextBefore: number | null;
  /** The filters of the records shown (or being loaded). */
  filters: IAuditFilters;
  /** The message of the last load's error, and its HTTP status (0: not reached). */
  error: string | null;
  errorStatus: number | null;
  /** An older page is being loaded. */
  loadingMore: boolean;
  verify: IVerifyState;
  /** When records were last loaded (ms since the epoch). */
  updated: number | null;
}

export const INITIAL_AUDIT: IAuditState = {
  admin: false,
  forbidden: false,
  status: 'idle',
  records: [],
  nextBefore: null,
  filters: NO_FILTERS,
  error: null,
  errorStatus: null,
  loadingMore: false,
  verify: { status: 'idle', result: null, error: null },
  updated: null
};

/** Whether the section is shown at all. */
export function auditVisible(state: Pick<IAuditState, 'admin' | 'forbidden'>): boolean {
  return state.admin && !state.forbidden;
}

/** The filters trimmed. */
export function cleanFilters(filters: IAuditFilters): IAuditFilters {
  return {
    user: filters.user.trim(),
    action: filters.action.trim(),
    since: filters.since.trim()
  };
}

/** Whether any filter is set. */
export function hasFilters(filters: IAuditFilters): boolean {
  const f = cleanFilters(filters);
  return Boolean(f.user || f.action || f.since);
}

/** The query of a page: the filters that are set, the page size, and ``before`` when paging. */
export function auditQuery(
  filters: IAuditFilters,
  before: number | null = null,
  limit = AUDIT_PAGE
): IAuditQuery {
  const f = cleanFilters(filters);
  const query: IAuditQuery = { limit };
  if (f.user) {
    query.user = f.user;
  }
  if (f.action) {
    query.action = f.action;
  }
  if (f.since) {
    query.since = f.since;
  }
  if (before !== null) {
    query.before = before;
  }
  return query;
}

/** ``state`` loading the first page of ``filters``. */
export function startLoad(state: IAuditState, filters: IAuditFilters): IAuditState {
  return { ...state, status: 'loading', filters: cleanFilters(filters) };
}

/**
 * ``state`` with a page of records: the first page replaces what was shown; a next page
 * (``append``) adds the records not shown yet, newest first.
 */
export function withPage(
  state: IAuditState,
  page: IAuditRecords,
  append: boolean,
  now: number
): IAuditState {
  let records = page.records;
  if (append) {
    const seen = new Set(state.records.map(r => r.seq));
    records = [...state.records, ...page.records.filter(r => !seen.has(r.seq))].sort(
      (a, b) => b.seq - a.seq
    );
  }
  return {
    ...state,
    status: 'ok',
    records,
    nextBefore: page.next_before ?? null,
    error: null,
    errorStatus: null,
    loadingMore: false,
    updated: now
  };
}

/**
 * ``state`` after a load failed with ``message`` (HTTP ``status``): a 403 is the service
 * saying the user is not an admin (any more), which hides the section; anything else
 * is shown in it, over the records that were shown.
 */
export function withLoadError(
  state: IAuditState,
  message: string,
  status: number,
  now: number
): IAuditState {
  if (status === 403) {
    return { ...INITIAL_AUDIT, admin: state.admin, forbidden: true };
  }
  return {
    ...state,
    status: 'error',
    error: message,
    errorStatus: status,
    loadingMore: false,
    updated: now
  };
}

/** What an empty list says: how to see records. */
export function emptyMessage(filters: IAuditFilters): string {
  return hasFilters(filters)
    ? 'No records match these filters: clear them, or give an earlier "since" (e.g. 7d).'
    : 'No records yet: logins, servers, jobs, deployments and every other audited action appear here as they happen.';
}

/** What to do about a load error, beyond the service's own message. */
export function errorAdvice(status: number | null): string | null {
  if (status === 400) {
    return null; // the service's message says which filter to fix
  }
  if (status === 502 || status === 0) {
    return 'The hub runs the audit service unless SHIPYARD_AUDIT_SERVICE=0; its log says why it is down. Then press ⟳.';
  }
  return 'Press ⟳ to try again; `shipyard audit list` reads the trail on the hub.';
}

/** Who acted, in words: ``alice``, ``scheduler for alice``, ``anonymous``. */
export function describeActor(record: IAuditRecord): string {
  const actor = record.actor ?? 'anonymous';
  return record.on_behalf_of ? `${actor} for ${record.on_behalf_of}` : actor;
}

/** Whether a record is a refusal (shown marked). */
export function isDenied(record: IAuditRecord): boolean {
  return record.outcome === 'denied';
}

/** A record's time in UTC to the second: ``2026-12-06 16:05:03 UTC``; the text as is if unparsable. */
export function formatAuditTime(iso: string | null | undefined): string {
  if (!iso) {
    return '–';
  }
  const t = Date.parse(iso);
  if (Number.isNaN(t)) {
    return iso;
  }
  return `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/**
 * Suggestions for the action filter: the families and actions of the records shown
 * (``server``, ``server.start``, ...), sorted. The service lists the rest in its 400.
 */
export function actionSuggestions(records: readonly IAuditRecord[]): string[] {
  const names = new Set<string>();
  for (const r of records) {
    if (!r.action) {
      continue;
    }
    names.add(r.action);
    names.add(r.action.split('.')[0]);
  }
  return [...names].sort();
}

/** ``state`` while a verification runs. */
export function startVerify(state: IAuditState): IAuditState {
  return { ...state, verify: { status: 'running', result: state.verify.result, error: null } };
}

/** ``state`` with a verification's result. */
export function withVerify(state: IAuditState, result: IAuditVerify): IAuditState {
  return { ...state, verify: { status: 'done', result, error: null } };
}

/** ``state`` after a verification failed to run (a 403 hides the section, as for loads). */
export function withVerifyError(state: IAuditState, message: string, status: number): IAuditState {
  if (status === 403) {
    return { ...INITIAL_AUDIT, admin: state.admin, forbidden: true };
  }
  return { ...state, verify: { status: 'error', result: null, error: message } };
}

/** A verification's result in words: a headline, and one line per problem. */
export function verifySummary(result: IAuditVerify): { headline: string; problems: string[] } {
  const range =
    result.first_seq !== null && result.last_seq !== null
      ? ` (seq ${result.first_seq}–${result.last_seq})`
      : '';
  if (result.ok) {
    const n = Math.max(result.file_records, result.table_records);
    return {
      headline: `Trail intact: ${n} record${n === 1 ? '' : 's'}${range}, every hash links to the one before, file and table agree.`,
      problems: []
    };
  }
  const problems = result.problems.map(
    p => `${p.seq !== null ? `seq ${p.seq}` : 'no seq'} (${p.where}): ${p.kind}: ${p.message}`
  );
  const first = result.problems[0];
  const where = first
    ? `; the first at ${first.seq !== null ? `seq ${first.seq}` : 'a record without a seq'} (${first.kind}, ${first.where})`
    : '';
  const count = result.problems.length;
  return {
    headline: `Trail broken: ${count} problem${count === 1 ? '' : 's'}${where}. Run \`shipyard audit verify\` on the hub for the full report.`,
    problems
  };
}
