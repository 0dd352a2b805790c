/**
 * The one way the frontend talks to Shipyard: the server extension's REST handlers under
 * ``/shipyard/api/`` on the user's own Jupyter server (token, cookie and XSRF handled by
 * ``ServerConnection``). The server forwards scheduler and deployer routes to the hub
 * services; the browser never holds a hub token.
 *
 * Every error answer of those handlers is JSON ``{"message": ...}`` (the services' own
 * error schema, passed on unchanged); :class:`ShipyardAPIError` carries that message so
 * the UI can show it as it is. An answer that is not JSON (a 404 page of a server without
 * the extension, a proxy's error page) becomes a message that says what happened.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { IErrorBody } from './types';

/** The URL prefix of the server extension's handlers. */
export const API_PREFIX = 'shipyard/api';

/** An error answer (or no answer) from the server extension. */
export class ShipyardAPIError extends Error {
  constructor(
    message: string,
    /** The HTTP status; 0 when the server was not reached. */
    readonly status: number,
    /** Per-field errors of a 400, as the service lists them. */
    readonly errors: IErrorBody['errors'] = []
  ) {
    super(message);
    this.name = 'ShipyardAPIError';
  }
}

/** The message of any error, for showing to the user. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

async function failure(response: Response, url: string): Promise<ShipyardAPIError> {
  const text = await response.text().catch(() => '');
  let body: Partial<IErrorBody> | null = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (body && typeof body.message === 'string' && body.message) {
    return new ShipyardAPIError(body.message, response.status, body.errors ?? []);
  }
  const reason = response.statusText ? ` ${response.statusText}` : '';
  const hint =
    response.status === 404
      ? ': this server does not have that Shipyard endpoint (is the shipyard server extension installed and enabled?)'
      : response.status === 403
        ? ': not allowed (log in again?)'
        : '';
  return new ShipyardAPIError(
    `${new URL(url, 'http://localhost').pathname} answered ${response.status}${reason}${hint}`,
    response.status
  );
}

/**
 * Send a request to ``/shipyard/api/<endPoint>`` and return the answer, or throw a
 * :class:`ShipyardAPIError` for an error answer or a network failure.
 */
export async function requestResponse(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<Response> {
  const url = URLExt.join(settings.baseUrl, API_PREFIX, endPoint);
  const headers = new Headers(init.headers ?? {});
  if (init.body && !headers.has('Content-Type')) {
    headers.set('Content-Type', 'application/json');
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { ...init, headers }, settings);
  } catch (error) {
    throw new ShipyardAPIError(`Could not reach the Jupyter server: ${errorMessage(error)}`, 0);
  }
  if (!response.ok) {
    throw await failure(response, url);
  }
  return response;
}

/**
 * ``requestResponse`` with the answer's JSON body (``undefined`` for 204 No Content).
 *
 * @typeParam T the JSON's type, as typed in ./types.ts.
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const response = await requestResponse(endPoint, init, settings);
  if (response.status === 204) {
    return undefined as T;
  }
  const text = await response.text();
  if (!text) {
    return undefined as T;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ShipyardAPIError(
      `${endPoint} answered with something that is not JSON: ${text.slice(0, 120)}`,
      response.status
    );
  }
}

/** A name or id as one segment of a route's path (``/`` and the like escaped). */
export function segment(name: string): string {
  return encodeURIComponent(name);
}

/** ``?a=1&b=2`` for the defined values of ``query`` ('' when none). */
export function queryString(
  query: Record<string, string | number | boolean | undefined | null>
): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) {
      params.set(key, String(value));
    }
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** The file name in a ``Content-Disposition`` header, or ``fallback``. */
export function dispositionFilename(header: string | null, fallback: string): string {
  if (!header) {
    return fallback;
  }
  const star = /filename\*\s*=\s*(?:UTF-8'')?([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ''));
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*("([^"]*)"|[^;]+)/i.exec(header);
  const name = plain ? (plain[2] ?? plain[1]).trim() : '';
  return name && !name.includes('/') ? name : fallback;
}
