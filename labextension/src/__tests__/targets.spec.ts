/**
 * The Alerts section's notification targets: when they load, what the field sends, the
 * service's refusal in the form's words, the hint of the schemes allowed.
 */
import { describe, expect, it } from 'vitest';

import {
  INITIAL_TARGETS,
  ITargetsState,
  parseTargets,
  refusalText,
  schemesHint,
  settled,
  targetsDue,
  targetsLoaded,
  withTargets
} from '../logic/targets';

const state = (changes: Partial<ITargetsState>): ITargetsState => ({
  ...INITIAL_TARGETS,
  ...changes
});

describe('targetsDue', () => {
  it('loads once, then only when asked, never while loading or saving', () => {
    expect(targetsDue(INITIAL_TARGETS)).toBe(true);
    expect(targetsDue(state({ status: 'ok' }))).toBe(false);
    expect(targetsDue(state({ status: 'ok' }), true)).toBe(true);
    expect(targetsDue(state({ status: 'error' }))).toBe(false);
    expect(targetsDue(state({ status: 'error' }), true)).toBe(true);
    expect(targetsDue(state({ status: 'loading' }), true)).toBe(false);
    expect(targetsDue(state({ status: 'ok', saving: true }), true)).toBe(false);
  });
});

describe('withTargets', () => {
  it('shows the answer and clears a load error, keeping the save counter and refusal', () => {
    const before = state({ status: 'error', error: 'down', saved: 2, saveError: 'URL 1: no' });
    const after = withTargets(before, {
      targets: ['json://hooks.example.org/…'],
      updated_at: '2026-12-07T12:00:00Z',
      schemes: ['json', 'slack']
    });
    expect(after).toEqual({
      ...before,
      status: 'ok',
      targets: ['json://hooks.example.org/…'],
      schemes: ['json', 'slack'],
      updatedAt: '2026-12-07T12:00:00Z',
      error: null
    });
  });
});

describe('targetsLoaded and settled', () => {
  it('knows the service answered once, even under a later error or load', () => {
    expect(targetsLoaded(INITIAL_TARGETS)).toBe(false);
    expect(targetsLoaded(state({ status: 'loading' }))).toBe(false);
    expect(targetsLoaded(state({ status: 'ok' }))).toBe(true);
    expect(targetsLoaded(state({ status: 'error', schemes: ['json'] }))).toBe(true);
    expect(targetsLoaded(state({ status: 'error' }))).toBe(false);
    expect(targetsLoaded(state({ status: 'loading', schemes: ['json'] }))).toBe(true);
  });

  it('settles an overtaken load on what was shown, or on loading again', () => {
    expect(settled(state({ status: 'loading', schemes: ['json'] }))).toBe('ok');
    expect(settled(state({ status: 'loading' }))).toBe('idle');
    expect(settled(state({ status: 'error', schemes: ['json'] }))).toBe('error');
    expect(settled(state({ status: 'ok' }))).toBe('ok');
  });
});

describe('parseTargets', () => {
  it('takes one URL a line, trimmed, blank lines left out, order and repeats kept', () => {
    expect(parseTargets('')).toEqual([]);
    expect(parseTargets('  \n\n')).toEqual([]);
    expect(
      parseTargets(' json://hooks.example.org/a \r\n\nslack://T/B/C\njson://hooks.example.org/a')
    ).toEqual(['json://hooks.example.org/a', 'slack://T/B/C', 'json://hooks.example.org/a']);
    // nothing is checked here: the service says what it refuses
    expect(parseTargets('not a url')).toEqual(['not a url']);
  });
});

describe('refusalText', () => {
  it("says the service's urls.N as the Nth URL given, from 1", () => {
    expect(refusalText("urls.0: the scheme 'ftp' is not one users may use here")).toBe(
      "URL 1: the scheme 'ftp' is not one users may use here"
    );
    expect(refusalText('urls.1: private address; urls.10: not an apprise URL')).toBe(
      'URL 2: private address; URL 11: not an apprise URL'
    );
  });

  it('leaves any other message as it came', () => {
    expect(refusalText('Cannot reach the alerts service')).toBe('Cannot reach the alerts service');
    expect(refusalText('urls: List should have at most 10 items')).toBe(
      'urls: List should have at most 10 items'
    );
  });
});

describe('schemesHint', () => {
  it('lists the schemes allowed as URLs begin, or says none is', () => {
    expect(schemesHint(['mailto', 'json', 'slack'])).toMatch(
      /^Allowed here: mailto:\/\/, json:\/\/, slack:\/\/\. Forms: https:\/\/github\.com\/caronc\/apprise\/wiki$/
    );
    expect(schemesHint([])).toBe(
      'Your admin allows no notification targets of your own on this hub.'
    );
  });
});
