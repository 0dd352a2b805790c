/**
 * "Schedule pipeline" on a pipeline file: hand the file to the scheduler (POST
 * scheduler/pipelines {"path"}; when its name is taken, PUT scheduler/pipelines/<id> with
 * the path, the pipeline found in the list as ``logic/pipelineFile.ts`` says), then show
 * the answer: the steps and the triggers in words, or the refusal's file:line errors one a
 * line.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { errorMessage, ShipyardAPIError } from '../api/request';
import type { SchedulerService } from '../api/scheduler';
import type { IPipeline } from '../api/types';
import { pipelineToUpdate, scheduledPipeline } from '../logic/pipelineFile';
import { PipelineRefusalView, ScheduledPipelineView } from './schedulePipelineView';

/** Create or update the pipeline of ``path``; ``updated`` says which it was. */
export async function createOrUpdatePipeline(
  scheduler: SchedulerService,
  path: string
): Promise<{ pipeline: IPipeline; updated: boolean }> {
  try {
    return { pipeline: await scheduler.createPipeline(path), updated: false };
  } catch (error) {
    if (!(error instanceof ShipyardAPIError) || error.status !== 409) {
      throw error;
    }
    const existing = pipelineToUpdate(await scheduler.listPipelines(), error.message, path);
    if (!existing) {
      throw error;
    }
    return { pipeline: await scheduler.updatePipeline(existing.id, path), updated: true };
  }
}

/**
 * Schedule the pipeline file at ``path`` (relative to the home, as the file browser gives
 * it) and show what the scheduler answered; ``onScheduled`` refreshes the panel.
 */
export async function schedulePipelineFile(
  scheduler: SchedulerService,
  path: string,
  onScheduled: () => void
): Promise<void> {
  let body: React.ReactElement;
  let title: string;
  try {
    const { pipeline, updated } = await createOrUpdatePipeline(scheduler, path);
    onScheduled();
    title = scheduledPipeline(pipeline, updated).title;
    body = <ScheduledPipelineView pipeline={pipeline} updated={updated} path={path} />;
  } catch (error) {
    title = `Could not schedule ${path}`;
    body = <PipelineRefusalView message={errorMessage(error)} />;
  }
  await showDialog({ title, body, buttons: [Dialog.okButton({ label: 'Close' })] });
}

/** Show the pipeline the scheduler made or updated from ``path``. */
export async function showScheduledPipeline(
  pipeline: IPipeline,
  updated: boolean,
  path: string
): Promise<void> {
  await showDialog({
    title: scheduledPipeline(pipeline, updated).title,
    body: <ScheduledPipelineView pipeline={pipeline} updated={updated} path={path} />,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
