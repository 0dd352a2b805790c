/**
 * The Pipelines section's dialogs: "Add pipeline" (POST /scheduler/pipelines) and the
 * parameters of a run (POST /scheduler/pipelines/<id>/runs).
 *
 * The scheduler is the judge of a pipeline file: a refusal (its 400 lists every
 * file:line:column error, one a line) reopens the dialog with the path as typed and those
 * lines on top, so the user can fix the file and try again.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';

import { errorMessage } from '../api/request';
import type { IPipeline, JSONValue } from '../api/types';
import { messageLines, pipelineParameterTexts, pipelineParameterValues } from '../logic/pipelines';
import { FormBody } from './body';
import {
  AddPipelineForm,
  IAddPipelineValues,
  IRunPipelineValues,
  RunPipelineForm
} from './pipelineForms';

/**
 * Ask for a pipeline.yaml's path until ``add`` takes it or the user cancels.
 *
 * @returns the pipeline added, or null.
 */
export async function addPipelineDialog(
  add: (path: string) => Promise<IPipeline>
): Promise<IPipeline | null> {
  let values: IAddPipelineValues = { path: '' };
  let errors: string[] = [];
  for (;;) {
    const body = new FormBody(AddPipelineForm, { initial: values, errors });
    const result = await showDialog<IAddPipelineValues>({
      title: 'Add a pipeline',
      body,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Add' })],
      focusNodeSelector: 'input[name="shipyard-pipeline-path"]'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    const path = values.path.trim();
    if (!path) {
      errors = ['Give the path of a pipeline.yaml in your home, e.g. churn/pipeline.yaml.'];
      continue;
    }
    try {
      return await add(path);
    } catch (error) {
      errors = messageLines(errorMessage(error));
    }
  }
}

/**
 * The parameters for a run of ``pipeline``: asked for when it declares some, else none.
 *
 * @returns the values that differ from the file's, or null when the user cancels.
 */
export async function runParametersDialog(
  pipeline: IPipeline
): Promise<Record<string, JSONValue> | null> {
  const declared = pipeline.parameters as Record<string, unknown>;
  if (!Object.keys(declared).length) {
    return {};
  }
  let values: IRunPipelineValues = { params: pipelineParameterTexts(declared) };
  let errors: string[] = [];
  for (;;) {
    const body = new FormBody(RunPipelineForm, { initial: values, declared, errors });
    const result = await showDialog<IRunPipelineValues>({
      title: `Run ${pipeline.name}`,
      body,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run' })]
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    const read = pipelineParameterValues(declared, values.params);
    if (read.ok) {
      return read.values;
    }
    errors = read.errors;
  }
}
