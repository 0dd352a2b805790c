/**
 * Schedule… and Deploy… buttons on every notebook's toolbar.
 */
import { Notification } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import type { Contents } from '@jupyterlab/services';
import { ToolbarButton } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { errorMessage } from './api/request';
import type { INotebookContent, ISchedulerProfile } from './api/types';
import { askDeploy } from './dialogs/deploy';
import { scheduleNotebook } from './dialogs/schedule';
import { defaultDeploymentName } from './logic/names';
import { isPipelineFile } from './logic/pipelineFile';
import { folderOf } from './logic/schedulePipeline';
import type { IShipyardClients } from './panel/model';

export class ShipyardNotebookButtons implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(
    private readonly clients: IShipyardClients,
    private readonly onScheduled: () => void,
    private readonly contents: Contents.IManager
  ) {}

  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const schedule = new ToolbarButton({
      className: 'shipyard-schedule-button',
      label: 'Schedule…',
      tooltip: 'Run this notebook (or a pipeline beside it) on a schedule, with Shipyard',
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
          save: () => context.save(),
          pipelineFiles: () => this._pipelineFiles(folderOf(context.localPath)),
          readFile: path => this._read(path),
          writeFile: async (path, text) => {
            await this.contents.save(path, { type: 'file', format: 'text', content: text });
          }
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

  /** The pipeline files of ``folder`` (home-relative), with their texts. */
  private async _pipelineFiles(folder: string): Promise<{ path: string; text: string }[]> {
    const listing = await this.contents.get(folder, { content: true });
    const items = (listing.content ?? []) as Contents.IModel[];
    const files = items.filter(item => item.type === 'file' && isPipelineFile(item.name));
    return Promise.all(files.map(async f => ({ path: f.path, text: await this._read(f.path) })));
  }

  /** A text file's content, read now. */
  private async _read(path: string): Promise<string> {
    const model = await this.contents.get(path, { content: true, format: 'text', type: 'file' });
    return String(model.content ?? '');
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
