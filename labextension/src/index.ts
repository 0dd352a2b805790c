/**
 * Shipyard's JupyterLab extension: a sidebar panel (profile, experiments, scheduled jobs,
 * deployments, and the audit trail for hub admins) and Schedule… / Deploy… buttons on
 * notebooks, and Schedule pipeline on a pipeline.yaml in the file browser.
 *
 * Everything talks to the server extension's REST handlers under /shipyard/api/ on the
 * user's own server (see ./api/request.ts), never to the hub services directly.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ServerConnection } from '@jupyterlab/services';

import { AlertsService } from './api/alerts';
import { AuditService } from './api/audit';
import { UsageService } from './api/usage';
import { DeployerService } from './api/deployer';
import { SchedulerService } from './api/scheduler';
import { ShipyardServerService } from './api/server';
import { ShipyardPanel } from './panel/widget';
import { registerSchedulePipeline } from './pipelineFile';
import { ShipyardNotebookButtons } from './toolbar';
import { IShipyardPanel } from './tokens';

export { IShipyardPanel } from './tokens';

const plugin: JupyterFrontEndPlugin<IShipyardPanel> = {
  id: 'shipyard-jupyterlab:plugin',
  description: 'Shipyard: profile, experiments, scheduled jobs and deployments in JupyterLab.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ILayoutRestorer],
  provides: IShipyardPanel,
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell,
    restorer: ILayoutRestorer | null
  ): IShipyardPanel => {
    const settings = app.serviceManager.serverSettings ?? ServerConnection.makeSettings();
    const clients = {
      server: new ShipyardServerService(settings),
      scheduler: new SchedulerService(settings),
      deployer: new DeployerService(settings),
      audit: new AuditService(settings),
      usage: new UsageService(settings),
      alerts: new AlertsService(settings)
    };
    const panel = new ShipyardPanel(clients);
    labShell.add(panel, 'left', { rank: 900 });
    if (restorer) {
      restorer.add(panel, 'shipyard-panel');
    }
    app.docRegistry.addWidgetExtension(
      'Notebook',
      new ShipyardNotebookButtons(clients, () => void panel.refresh(), app.serviceManager.contents)
    );
    registerSchedulePipeline(app, labShell, clients.scheduler, () => void panel.refresh());
    app.commands.addCommand('shipyard:refresh', {
      label: 'Refresh the Shipyard panel',
      execute: () => panel.refresh()
    });
    return panel;
  }
};

export default plugin;
