/**
 * The usage service, through the server extension's forwarding routes
 * (server_ext/handlers/usage.py ``ROUTES``, /shipyard/api/usage and /shipyard/api/usage/waste).
 * The service decides what a caller sees: a hub admin everyone's usage, anyone else their own.
 */
import { PageConfig } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { queryString, requestAPI } from './request';
import type { IUsageQuery, IUsageReport, IUsageWaste } from './types';

const BASE = 'usage';

/** One typed client for the usage routes the panel uses. */
export class UsageService {
  /**
   * @param owner The server's owner (JupyterHub's ``hubUser``), named in the queries of the
   *   owner's own usage: an admin's query without a user is everyone's.
   */
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
    readonly owner: string = PageConfig.getOption('hubUser')
  ) {}

  /** Usage and cost by ``query.by`` (``day``: a series, every day oldest first). */
  report(query: IUsageQuery = {}): Promise<IUsageReport> {
    return requestAPI<IUsageReport>(`${BASE}${queryString({ ...query })}`, {}, this.settings);
  }

  /** Idle servers holding resources, and limits far above use. */
  waste(): Promise<IUsageWaste> {
    return requestAPI<IUsageWaste>(`${BASE}/waste`, {}, this.settings);
  }
}
