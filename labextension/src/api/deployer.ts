/**
 * The deployer, through the server extension's forwarding routes
 * (server_ext/handlers/deployer.py ``ROUTES``, under /shipyard/api/deployer/).
 */
import { ServerConnection } from '@jupyterlab/services';

import { requestAPI, segment } from './request';
import type {
  IDeployment,
  IDeploymentMetrics,
  IListDeployments,
  ILineage,
  IPromoteVersion,
  IRollbackVersion
} from './types';

const BASE = 'deployer/deployments';

/** One typed client for the deployer's routes the panel uses. */
export class DeployerService {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The user's deployments. */
  async list(): Promise<IDeployment[]> {
    const answer = await requestAPI<IListDeployments>(BASE, {}, this.settings);
    return answer.deployments;
  }

  /** One deployment. */
  get(name: string): Promise<IDeployment> {
    return requestAPI<IDeployment>(`${BASE}/${segment(name)}`, {}, this.settings);
  }

  /**
   * A version's lineage. The server extension forwards it with the server's own token, so
   * the deployer reads the tracking service and the scheduler as this user.
   */
  lineage(name: string, version: number): Promise<ILineage> {
    return requestAPI<ILineage>(
      `${BASE}/${segment(name)}/versions/${segment(String(version))}/lineage`,
      {},
      this.settings
    );
  }

  /** What the router saw for each version over the last window. */
  metrics(name: string): Promise<IDeploymentMetrics> {
    return requestAPI<IDeploymentMetrics>(`${BASE}/${segment(name)}/metrics`, {}, this.settings);
  }

  /** Send all traffic back to ``version``, or to the version that served before. */
  rollback(name: string, version?: number): Promise<IDeployment> {
    const body: IRollbackVersion = version === undefined ? {} : { version };
    return requestAPI<IDeployment>(
      `${BASE}/${segment(name)}/rollback`,
      { method: 'POST', body: JSON.stringify(body) },
      this.settings
    );
  }

  /** Send all traffic to ``version``. */
  promote(name: string, version: number): Promise<IDeployment> {
    const body: IPromoteVersion = { version };
    return requestAPI<IDeployment>(
      `${BASE}/${segment(name)}/promote`,
      { method: 'POST', body: JSON.stringify(body) },
      this.settings
    );
  }
}
