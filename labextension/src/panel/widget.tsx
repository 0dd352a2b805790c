/**
 * The Shipyard sidebar: a ReactWidget around :class:`ShipyardModel`, polling every 5 s
 * while it is visible (and the browser tab too), with the actions that need JupyterLab
 * (dialogs, notifications, downloads).
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { errorMessage } from '../api/request';
import type { IJob, IPipeline, IPipelineRun, IPipelineStep, IRun } from '../api/types';
import { showLineage } from '../dialogs/lineage';
import { showRunLog } from '../dialogs/logs';
import { addPipelineDialog, runParametersDialog } from '../dialogs/pipeline';
import { shipyardIcon } from '../icons';
import { liveVersion } from '../logic/state';
import type { IShipyardPanel } from '../tokens';
import { IDeploymentState, IShipyardClients, ShipyardModel } from './model';
import { IPanelActions, PanelView } from './views';

/** How often the panel refreshes while visible. */
export const POLL_INTERVAL_MS = 5000;

export class ShipyardPanel extends ReactWidget implements IShipyardPanel {
  constructor(readonly clients: IShipyardClients) {
    super();
    this.model = new ShipyardModel(clients);
    this.id = 'shipyard-panel';
    this.title.icon = shipyardIcon;
    this.title.caption = 'Shipyard';
    this.addClass('shipyard-panel');
    this._poll = new Poll({
      factory: () => this.model.refresh(),
      frequency: { interval: POLL_INTERVAL_MS, backoff: true, max: 60_000 },
      // no requests while the panel is closed or the browser tab is hidden
      standby: () => !this.isVisible || 'when-hidden',
      name: 'shipyard:panel'
    });
    this._actions = {
      refresh: () => void this.refresh(),
      runNow: job => void this._runNow(job),
      togglePause: job => void this._togglePause(job),
      downloadOutput: (run, job) => void this._download(run, job),
      showLogs: (run, job) => void showRunLog(this.clients.scheduler, run, job),
      rollback: state => void this._rollback(state),
      showLineage: (name, version) => void showLineage(this.clients.deployer, name, version),
      outputHref: run => this.clients.scheduler.outputUrl(run.id),
      // errors stay in the Audit section's state: these never reject
      auditFilter: filters => void this.model.loadAudit(filters),
      auditMore: () => void this.model.loadMoreAudit(),
      auditVerify: () => void this.model.verifyAudit(),
      usageMetric: metric => this.model.setUsageMetric(metric),
      saveTargets: urls => void this.model.saveTargets(urls),
      // pipelines: an action's error stays in the section, a run shows as it goes
      addPipeline: () => void this._addPipeline(),
      selectPipeline: id => void this.model.selectPipeline(id),
      selectPipelineRun: id => void this.model.selectPipelineRun(id),
      runPipeline: pipeline => void this._runPipeline(pipeline),
      repairPipelineRun: run =>
        void this._busyWhile(`pipeline-repair:${run.id}`, () => this.model.repairPipelineRun(run)),
      cancelPipelineRun: run =>
        void this._busyWhile(`pipeline-cancel:${run.id}`, () => this.model.cancelPipelineRun(run)),
      togglePipelinePause: pipeline =>
        void this._busyWhile(`pipeline-pause:${pipeline.id}`, () =>
          this.model.togglePipelinePause(pipeline)
        ),
      showStepLog: (step, run) =>
        void showRunLog(this.clients.scheduler, stepRun(step), stepName(step, run)),
      downloadStepOutput: (step, run) => void this._download(stepRun(step), stepName(step, run)),
      stepOutputHref: step => this.clients.scheduler.outputUrl(step.run_id ?? '')
    };
  }

  readonly model: ShipyardModel;

  /** Refresh every section now (experiments included). */
  async refresh(): Promise<void> {
    await this.model.refresh(true);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    super.dispose();
  }

  render(): React.ReactElement {
    return <PanelView model={this.model} actions={this._actions} busy={new Set(this._busy)} />;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this._poll.refresh();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      void this._poll.refresh();
    }
  }

  // -------------------------------------------------------------- actions

  private async _busyWhile<T>(key: string, work: () => Promise<T>): Promise<T> {
    this._busy.add(key);
    this.update();
    try {
      return await work();
    } finally {
      this._busy.delete(key);
      this.update();
    }
  }

  private async _runNow(job: IJob): Promise<void> {
    try {
      const run = await this._busyWhile(`run:${job.id}`, () => this.model.runNow(job));
      Notification.success(`Queued a run of ${job.name} (run ${run.id.slice(0, 8)}).`, {
        autoClose: 4000
      });
    } catch (error) {
      Notification.error(`Could not run ${job.name}: ${errorMessage(error)}`, { autoClose: 8000 });
    }
  }

  private async _togglePause(job: IJob): Promise<void> {
    const verb = job.paused ? 'resume' : 'pause';
    try {
      const updated = await this._busyWhile(`pause:${job.id}`, () => this.model.togglePause(job));
      Notification.success(
        updated.paused
          ? `Paused ${job.name}: no scheduled runs until it is resumed.`
          : `Resumed ${job.name}.`,
        { autoClose: 4000 }
      );
    } catch (error) {
      Notification.error(`Could not ${verb} ${job.name}: ${errorMessage(error)}`, {
        autoClose: 8000
      });
    }
  }

  private async _addPipeline(): Promise<void> {
    const pipeline = await addPipelineDialog(path => this.model.addPipeline(path));
    if (pipeline) {
      Notification.success(
        `Added ${pipeline.name} (${pipeline.steps.length} steps): start it with Run.`,
        { autoClose: 4000 }
      );
    }
  }

  private async _runPipeline(pipeline: IPipeline): Promise<void> {
    const parameters = await runParametersDialog(pipeline);
    if (parameters === null) {
      return;
    }
    await this._busyWhile(`pipeline-run:${pipeline.id}`, () =>
      this.model.runPipeline(pipeline, parameters)
    );
  }

  private async _download(run: Pick<IRun, 'id'>, job: Pick<IJob, 'name'>): Promise<void> {
    try {
      const { blob, filename } = await this.clients.scheduler.runOutput(run.id);
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = filename;
      a.style.display = 'none';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30_000);
    } catch (error) {
      Notification.error(`Could not download the output of ${job.name}: ${errorMessage(error)}`, {
        autoClose: 8000
      });
    }
  }

  private async _rollback(state: IDeploymentState): Promise<void> {
    const { deployment } = state;
    const live = liveVersion(deployment.traffic);
    const target = deployment.previous_version;
    const body = (
      <div className="shipyard-confirm">
        All of <strong>{deployment.name}</strong>'s traffic goes back to{' '}
        {target !== null ? <strong>v{target}</strong> : 'the version that served before'}
        {live ? (
          <>
            {' '}
            (now <strong>v{live}</strong> takes it)
          </>
        ) : null}
        . The newer version keeps running, so you can promote it again.
      </div>
    );
    const result = await showDialog({
      title: `Roll back ${deployment.name}?`,
      body,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Roll back' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      const after = await this._busyWhile(`rollback:${deployment.name}`, () =>
        this.model.rollback(deployment.name)
      );
      const now = liveVersion(after.traffic);
      Notification.success(
        `Rolled back ${deployment.name}: ${now ? `v${now} now takes all traffic` : 'done'}.`,
        { autoClose: 5000 }
      );
    } catch (error) {
      Notification.error(`Could not roll back ${deployment.name}: ${errorMessage(error)}`, {
        autoClose: 8000
      });
    }
  }

  private _poll: Poll;
  private _busy = new Set<string>();
  private _actions: IPanelActions;
}

/** A pipeline step's scheduler run, as the log and output views take one. */
function stepRun(step: IPipelineStep): Pick<IRun, 'id' | 'status'> {
  return { id: step.run_id ?? '', status: step.run_status ?? 'queued' };
}

/** What a step's log and output are named by: the pipeline's name and the step's id. */
function stepName(step: IPipelineStep, run: IPipelineRun): Pick<IJob, 'name'> {
  return { name: `${run.pipeline_name} › ${step.step}` };
}
