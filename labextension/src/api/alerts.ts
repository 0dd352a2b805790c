/**
 * The alerts service, through the server extension's forwarding routes
 * (server_ext/handlers/alerts.py ``ROUTES``: /shipyard/api/alerts, /shipyard/api/alerts/{id}
 * and /shipyard/api/alerts/targets). The service decides what a caller sees: a hub admin
 * every alert, anyone else the alerts about their own models and jobs (another user's
 * answers 404); the targets are always the caller's own.
 */
import { ServerConnection } from '@jupyterlab/services';

import { queryString, requestAPI } from './request';
import type { IAlert, IAlertList, IAlertsQuery, ISetTargets, ITargets } from './types';

const BASE = 'alerts';

/** One typed client for the alerts routes the panel uses. */
export class AlertsService {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The caller's alerts, newest first: open ones (pending, firing) unless ``query`` says. */
  list(query: IAlertsQuery = {}): Promise<IAlertList> {
    return requestAPI<IAlertList>(`${BASE}${queryString({ ...query })}`, {}, this.settings);
  }

  /** One alert. */
  get(id: string): Promise<IAlert> {
    return requestAPI<IAlert>(`${BASE}/${encodeURIComponent(id)}`, {}, this.settings);
  }

  /** The caller's notification targets (redacted) and the schemes allowed here. */
  targets(): Promise<ITargets> {
    return requestAPI<ITargets>(`${BASE}/targets`, {}, this.settings);
  }

  /**
   * Replace the caller's targets with ``urls``; rejects with the service's 400 (which
   * names the refused URL as ``urls.N``) when one is refused, and then nothing changes.
   */
  setTargets(urls: string[]): Promise<ITargets> {
    const body: ISetTargets = { urls };
    return requestAPI<ITargets>(
      `${BASE}/targets`,
      { method: 'PUT', body: JSON.stringify(body) },
      this.settings
    );
  }
}
