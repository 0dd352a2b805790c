/**
 * requestAPI and the typed clients against a fake server: URLs, bodies, and errors as the
 * user will read them.
 */
import { ServerConnection } from '@jupyterlab/services';
import { describe, expect, it } from 'vitest';

import { DeployerService } from '../api/deployer';
import { dispositionFilename, queryString, requestAPI, ShipyardAPIError } from '../api/request';
import { SchedulerService } from '../api/scheduler';
import { ShipyardServerService } from '../api/server';

interface ISeen {
  method: string;
  url: string;
  body: string | null;
  contentType: string | null;
}

/** Settings whose fetch answers from ``routes`` (``METHOD path`` → Response factory). */
function fakeServer(routes: Record<string, (seen: ISeen) => Response>): {
  settings: ServerConnection.ISettings;
  seen: ISeen[];
} {
  const seen: ISeen[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = input instanceof Request ? input : new Request(String(input), init);
    const url = new URL(request.url);
    // ServerConnection adds a cache-busting timestamp to GETs: not part of what was asked
    url.search = url.search.replace(/[?&]\d{10,}$/, '').replace(/^\?$/, '');
    const entry: ISeen = {
      method: request.method,
      url: url.pathname + url.search,
      body: request.method === 'GET' ? null : await request.text(),
      contentType: request.headers.get('Content-Type')
    };
    seen.push(entry);
    const route = routes[`${request.method} ${url.pathname}`];
    if (!route) {
      return new Response('<html>404: Not Found</html>', {
        status: 404,
        statusText: 'Not Found',
        headers: { 'Content-Type': 'text/html' }
      });
    }
    return route(entry);
  };
  const settings = ServerConnection.makeSettings({
    baseUrl: 'http://hub.test/user/alice/',
    wsUrl: 'ws://hub.test/user/alice/',
    token: 'secret',
    fetch: fetch as typeof globalThis.fetch,
    Request,
    Headers
  });
  return { settings, seen };
}

/** The error ``promise`` rejects with (fails the test when it resolves). */
async function failureOf(promise: Promise<unknown>): Promise<ShipyardAPIError> {
  try {
    await promise;
  } catch (error) {
    return error as ShipyardAPIError;
  }
  throw new Error('expected the request to fail');
}

const json =
  (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  () =>
    new Response(JSON.stringify(body), {
      status,
      headers: { 'Content-Type': 'application/json', ...headers }
    });

describe('requestAPI', () => {
  it('asks under /shipyard/api/ on the user’s server and parses JSON', async () => {
    const { settings, seen } = fakeServer({
      'GET /user/alice/shipyard/api/profile': json({ user: 'alice' })
    });
    await expect(requestAPI('profile', {}, settings)).resolves.toEqual({ user: 'alice' });
    expect(seen[0].url).toBe('/user/alice/shipyard/api/profile');
  });

  it('throws the service’s message and status', async () => {
    const { settings } = fakeServer({
      'POST /user/alice/shipyard/api/scheduler/jobs': json(
        {
          status: 400,
          message: "name: job name 'Bad' is not a valid name",
          errors: [{ field: 'name', message: 'bad' }]
        },
        400
      )
    });
    const error = await failureOf(
      requestAPI('scheduler/jobs', { method: 'POST', body: '{}' }, settings)
    );
    expect(error).toBeInstanceOf(ShipyardAPIError);
    expect(error.message).toBe("name: job name 'Bad' is not a valid name");
    expect(error.status).toBe(400);
    expect(error.errors).toEqual([{ field: 'name', message: 'bad' }]);
  });

  it('explains an answer that is not the extension’s JSON', async () => {
    const { settings } = fakeServer({});
    const error = await failureOf(requestAPI('experiments', {}, settings));
    expect(error.status).toBe(404);
    expect(error.message).toContain('/user/alice/shipyard/api/experiments answered 404');
    expect(error.message).toContain('server extension');
  });

  it('turns a network failure into a message', async () => {
    const settings = ServerConnection.makeSettings({
      baseUrl: 'http://hub.test/',
      fetch: (async () => {
        throw new TypeError('Failed to fetch');
      }) as typeof globalThis.fetch,
      Request,
      Headers
    });
    const error = await failureOf(requestAPI('profile', {}, settings));
    expect(error).toBeInstanceOf(ShipyardAPIError);
    expect(error.status).toBe(0);
    expect(error.message).toContain('Failed to fetch');
  });

  it('returns undefined for 204', async () => {
    const { settings } = fakeServer({
      'DELETE /user/alice/shipyard/api/scheduler/jobs/j1': () => new Response(null, { status: 204 })
    });
    await expect(
      requestAPI('scheduler/jobs/j1', { method: 'DELETE' }, settings)
    ).resolves.toBeUndefined();
  });
});

describe('the typed clients', () => {
  it('create a job with a JSON body', async () => {
    const { settings, seen } = fakeServer({
      'POST /user/alice/shipyard/api/scheduler/jobs': ({ body }) =>
        json({ id: 'j1', ...JSON.parse(body!) }, 201)()
    });
    const job = await new SchedulerService(settings).createJob({
      name: 'daily',
      profile: 'small',
      source_path: 'daily.ipynb',
      parameters: { n: 3 },
      triggers: [{ kind: 'cron', expression: '0 6 * * *', timezone: 'UTC' }]
    });
    expect(job).toMatchObject({ id: 'j1', name: 'daily' });
    expect(seen[0].contentType).toBe('application/json');
    expect(JSON.parse(seen[0].body!)).toMatchObject({ triggers: [{ kind: 'cron' }] });
  });

  it('pause with PATCH {"paused": true} and read the job from the answer', async () => {
    const { settings, seen } = fakeServer({
      'PATCH /user/alice/shipyard/api/scheduler/jobs/j1': json({
        job: { id: 'j1', paused: true },
        changed: ['paused']
      })
    });
    const job = await new SchedulerService(settings).updateJob('j1', { paused: true });
    expect(job.paused).toBe(true);
    expect(seen[0].body).toBe('{"paused":true}');
  });

  it('list every page of jobs', async () => {
    const { settings, seen } = fakeServer({
      'GET /user/alice/shipyard/api/scheduler/jobs': ({ url }) =>
        url.includes('next_token=p2')
          ? json({ jobs: [{ id: 'b' }], next_token: null })()
          : json({ jobs: [{ id: 'a' }], next_token: 'p2' })()
    });
    const jobs = await new SchedulerService(settings).listJobs();
    expect(jobs.map(j => j.id)).toEqual(['a', 'b']);
    expect(seen.map(s => s.url)).toEqual([
      '/user/alice/shipyard/api/scheduler/jobs?limit=200',
      '/user/alice/shipyard/api/scheduler/jobs?limit=200&next_token=p2'
    ]);
  });

  it('read a run’s log from an offset and its output with the service’s file name', async () => {
    const { settings, seen } = fakeServer({
      'GET /user/alice/shipyard/api/scheduler/runs/r1/log': json({
        text: 'x',
        offset: 5,
        next_offset: 6,
        complete: true,
        status: 'succeeded'
      }),
      'GET /user/alice/shipyard/api/scheduler/runs/r1/output': () =>
        new Response('{"cells": []}', {
          headers: {
            'Content-Type': 'application/x-ipynb+json',
            'Content-Disposition': 'attachment; filename="daily-r1.ipynb"'
          }
        })
    });
    const scheduler = new SchedulerService(settings);
    await scheduler.runLog('r1', 5);
    expect(seen[0].url).toBe('/user/alice/shipyard/api/scheduler/runs/r1/log?offset=5');
    const output = await scheduler.runOutput('r1');
    expect(output.filename).toBe('daily-r1.ipynb');
    expect(await output.blob.text()).toBe('{"cells": []}');
    expect(scheduler.outputUrl('r1')).toBe(
      'http://hub.test/user/alice/shipyard/api/scheduler/runs/r1/output'
    );
  });

  it('roll back a deployment and ask for experiments with max_results', async () => {
    const { settings, seen } = fakeServer({
      'POST /user/alice/shipyard/api/deployer/deployments/churn/rollback': json({
        name: 'churn',
        traffic: { '1': 100 }
      }),
      'GET /user/alice/shipyard/api/experiments': json({ tracking_ui: null, runs: [] })
    });
    await new DeployerService(settings).rollback('churn');
    expect(seen[0].body).toBe('{}');
    await new ShipyardServerService(settings).experiments(20);
    expect(seen[1].url).toBe('/user/alice/shipyard/api/experiments?max_results=20');
  });
});

describe('helpers', () => {
  it('builds query strings from the defined values', () => {
    expect(queryString({ a: 1, b: undefined, c: null, d: 'x y' })).toBe('?a=1&d=x+y');
    expect(queryString({})).toBe('');
  });

  it('reads file names from Content-Disposition', () => {
    expect(dispositionFilename('attachment; filename="a.ipynb"', 'f')).toBe('a.ipynb');
    expect(dispositionFilename("attachment; filename*=UTF-8''%C3%A9t%C3%A9.ipynb", 'f')).toBe(
      'été.ipynb'
    );
    expect(dispositionFilename('attachment; filename="../x/a.ipynb"', 'f')).toBe('f');
    expect(dispositionFilename(null, 'f')).toBe('f');
  });
});
