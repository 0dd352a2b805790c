/**
 * Schedule… and Deploy… buttons on every notebook's toolbar.
 */
import { Notification } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ToolbarButton } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { errorMessage } from './api/request';
import type { INotebookContent, ISchedulerProfile } from './api/types';
import { askDeploy } from './dialogs/deploy';
import { scheduleNotebook } from './dialogs/schedule';
import { defaultDeploymentName } from './logic/names';
import type { IShipyardClients } from './panel/model';

export class ShipyardNotebookButtons implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(
    private readonly clients: IShipyardClients,
    private readonly onScheduled: () => void
  ) {}

  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const schedule = new ToolbarButton({
      className: 'shipyard-schedule-button',
      label: 'Schedule…',
      tooltip: 'Run this notebook on a schedule, as a Shipyard job',
      onClick: () => void this._schedule(panel, context)
    });
    const deploy = new ToolbarButton({
      className: 'shipyard-deploy-button',
      label: 'Deploy…',
      tooltip: 'Deploy a model from this notebook as an HTTP endpoint (%deploy)',
      onClick: () => void this._deploy(panel, context)
    });
    panel.toolbar.insertItem(10, 'shipyard-schedule', schedule);
    panel.toolbar.insertItem(11, 'shipyard-deploy', deploy);
    return new DisposableDelegate(() => {
      schedule.dispose();
      deploy.dispose();
    });
  }

  private async _schedule(
    panel: NotebookPanel,
    context: DocumentRegistry.IContext<INotebookModel>
  ): Promise<void> {
    try {
      await scheduleNotebook(
        {
          path: context.localPath,
          // the notebook as it is now: the scheduler reads its parameters cell (papermill's
          // inspector), the panel does not parse Python
          notebook: () => context.model.toJSON() as unknown as INotebookContent,
          save: () => context.save()
        },
        this.clients,
        this.onScheduled
      );
    } catch (error) {
      Notification.error(`Could not schedule ${context.localPath}: ${errorMessage(error)}`, {
        autoClose: 8000
      });
    }
  }

  private async _deploy(
    panel: NotebookPanel,
    context: DocumentRegistry.IContext<INotebookModel>
  ): Promise<void> {
    try {
      const profiles = await this.clients.scheduler
        .profiles()
        .catch(() => [] as ISchedulerProfile[]);
      const line = await askDeploy(
        { model: '', name: defaultDeploymentName(context.localPath), profile: '' },
        profiles
      );
      if (line === null || panel.isDisposed) {
        return;
      }
      const notebook = panel.content;
      // an empty code cell where the user is (the one Shift+Enter leaves) takes the line;
      // otherwise a new cell below the active one does
      let cell = notebook.activeCell;
      const empty =
        cell !== null &&
        cell.model.type === 'code' &&
        !cell.model.sharedModel.getSource().trim() &&
        (cell.model as ICodeCellModel).outputs.length === 0;
      if (!empty) {
        NotebookActions.insertBelow(notebook);
        cell = notebook.activeCell;
      }
      if (!cell) {
        throw new Error('no cell to write the %deploy line into');
      }
      cell.model.sharedModel.setSource(line);
      await NotebookActions.run(notebook, panel.sessionContext);
    } catch (error) {
      Notification.error(`Could not deploy: ${errorMessage(error)}`, { autoClose: 8000 });
    }
  }
}
