/**
 * Lumino tokens: what the Shipyard extension provides to other extensions.
 */
import { Token } from '@lumino/coreutils';

import type { AuditService } from './api/audit';
import type { DeployerService } from './api/deployer';
import type { SchedulerService } from './api/scheduler';
import type { ShipyardServerService } from './api/server';
import type { ShipyardModel } from './panel/model';

/** The Shipyard sidebar panel: its state, and a way to refresh it after a change. */
export interface IShipyardPanel {
  /** The panel's state (sections, metrics history) and its ``changed`` signal. */
  readonly model: ShipyardModel;
  /** The typed clients of the server extension's endpoints. */
  readonly clients: {
    readonly server: ShipyardServerService;
    readonly scheduler: SchedulerService;
    readonly deployer: DeployerService;
    readonly audit: AuditService;
  };
  /** Refresh every section now. */
  refresh(): Promise<void>;
}

export const IShipyardPanel = new Token<IShipyardPanel>(
  'shipyard-jupyterlab:IShipyardPanel',
  'The Shipyard sidebar panel (profile, experiments, jobs, deployments).'
);
