/**
 * The Alerts section's notification targets: where the alerts service tells the user about
 * their own alerts (apprise URLs: ``mailto://``, a ``json://`` webhook, ``slack://``…), and
 * the pure logic of the form that sets them (no I/O).
 *
 * The service keeps the targets encrypted and answers them redacted to their scheme and
 * host (``json://hooks.example.org/…``): they may hold a password or a webhook token, so the
 * panel never has them in full, and saving replaces the whole list (``PUT api/targets``).
 * Which schemes a target may use, and whether its server is one the service may reach, is
 * the service's decision alone (``AlertNotifier.user_schemes``, answered as ``schemes`` for
 * the hint): the form checks nothing itself and shows the service's 400 next to the field,
 * with ``urls.N`` said as ``URL N+1``.
 *
 * Targets change only when the user sets them: they load with the section's first refresh
 * and again on the panel's refresh button (:func:`targetsDue`), never with the poll.
 */
import type { ITargets } from '../api/types';

/** What the field shows before anything is typed. */
export const TARGET_EXAMPLE = 'jsons://hooks.example.org/alerts';

export interface ITargetsState {
  /** ``idle``: never asked for yet. */
  status: 'idle' | 'loading' | 'ok' | 'error';
  /** The user's targets as the service shows them: scheme and host only. */
  targets: string[];
  /** The schemes a target may use on this hub. */
  schemes: string[];
  /** When the targets were last set (ISO), null when never. */
  updatedAt: string | null;
  /** Why the last load failed. */
  error: string | null;
  /** A save is on its way. */
  saving: boolean;
  /** Why the last save was refused, in the service's words (``URL 1: …``). */
  saveError: string | null;
  /** How many saves succeeded: the field starts empty again after each. */
  saved: number;
}

export const INITIAL_TARGETS: ITargetsState = {
  status: 'idle',
  targets: [],
  schemes: [],
  updatedAt: null,
  error: null,
  saving: false,
  saveError: null,
  saved: 0
};

/** Whether a refresh loads the targets: never loaded, or asked for (not while busy). */
export function targetsDue(state: ITargetsState, force = false): boolean {
  if (state.status === 'loading' || state.saving) {
    return false;
  }
  return state.status === 'idle' || force;
}

/** Whether the service has answered once: the list, and its empty state, mean something. */
export function targetsLoaded(state: ITargetsState): boolean {
  return state.status === 'ok' || (state.status !== 'idle' && state.schemes.length > 0);
}

/** ``state`` with the service's answer (of a load or a save) shown. */
export function withTargets(state: ITargetsState, answer: ITargets): ITargetsState {
  return {
    ...state,
    status: 'ok',
    targets: answer.targets,
    schemes: answer.schemes,
    updatedAt: answer.updated_at,
    error: null
  };
}

/**
 * The status after a save overtook a load (whose answer is dropped): what was shown stays
 * shown when the service had answered before, else the next refresh loads again.
 */
export function settled(state: ITargetsState): ITargetsState['status'] {
  if (state.status !== 'loading') {
    return state.status;
  }
  return state.schemes.length ? 'ok' : 'idle';
}

/** The URLs typed in the field: one a line, each trimmed, blank lines left out, in order. */
export function parseTargets(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map(line => line.trim())
    .filter(line => line.length > 0);
}

/**
 * The service's refusal in the form's words: its ``urls.0: …`` names the first URL given,
 * said ``URL 1: …``; any other message is shown as it came.
 */
export function refusalText(message: string): string {
  return message.replace(/\burls\.(\d+)(?=:)/g, (_, index: string) => `URL ${Number(index) + 1}`);
}

/** The hint under the field: the schemes allowed here, as their URLs begin. */
export function schemesHint(schemes: readonly string[]): string {
  if (!schemes.length) {
    return 'Your admin allows no notification targets of your own on this hub.';
  }
  return `Allowed here: ${schemes.map(s => `${s}://`).join(', ')}. Forms: https://github.com/caronc/apprise/wiki`;
}

/** What the list says when there is no target. */
export const NO_TARGETS =
  'No targets: your alerts show only here. Add one to be told when an alert fires and resolves.';
