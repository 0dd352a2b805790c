/**
 * The server extension's own endpoints: this server's profile and the user's experiments.
 */
import { ServerConnection } from '@jupyterlab/services';

import { queryString, requestAPI } from './request';
import type { IExperiments, IServerProfile } from './types';

/** GET /shipyard/api/profile and /shipyard/api/experiments. */
export class ShipyardServerService {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The profile, limits, environment and live use of this server. */
  profile(): Promise<IServerProfile> {
    return requestAPI<IServerProfile>('profile', {}, this.settings);
  }

  /**
   * The newest MLflow runs of the user. Rejects with a 404 or 503
   * :class:`~./request.ShipyardAPIError` when tracking is not configured; its message
   * says so.
   */
  experiments(maxResults = 20): Promise<IExperiments> {
    return requestAPI<IExperiments>(
      `experiments${queryString({ max_results: maxResults })}`,
      {},
      this.settings
    );
  }
}
