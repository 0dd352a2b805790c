/**
 * The Deploy… dialog: deploy a model with ``%deploy``, in the notebook.
 *
 * Deploying a model variable needs the kernel (the magic logs it to MLflow first), and
 * the magic shows its progress and result as ipywidgets; so the dialog writes the magic
 * into the active cell when that is an empty code cell, else into a new cell below it, and
 * runs it there, where the user sees everything. The
 * inputs are checked here with the deployer's rules first, with messages that say what
 * to fix; a refusal reopens the dialog with the values as typed.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';

import type { ISchedulerProfile } from '../api/types';
import { deployLine, IDeployValues } from '../logic/forms';
import { FormBody } from './body';
import { DeployForm } from './deployForm';

/**
 * Ask what to deploy until the values are valid or the user cancels.
 *
 * @returns the ``%deploy`` line to run, or null when cancelled.
 */
export async function askDeploy(
  initial: IDeployValues,
  profiles: ISchedulerProfile[]
): Promise<string | null> {
  let values = initial;
  let errors: string[] = [];
  for (;;) {
    const result = await showDialog<IDeployValues>({
      title: 'Deploy a model',
      body: new FormBody(DeployForm, { initial: values, profiles, errors }),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Deploy' })],
      focusNodeSelector: 'input[name="shipyard-deploy-model"]'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    const line = deployLine(values);
    if (line.ok) {
      return line.line;
    }
    errors = line.errors;
  }
}
