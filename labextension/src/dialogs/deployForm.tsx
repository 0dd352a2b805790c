/**
 * The Deploy dialog's form: the model, the deployment's name and an optional profile, with
 * the ``%deploy`` line it will run. Plain React (no JupyterLab imports), so it renders in
 * unit tests; ./deploy.tsx puts it in a JupyterLab Dialog.
 */
import * as React from 'react';

import type { ISchedulerProfile } from '../api/types';
import { deployLine, IDeployValues } from '../logic/forms';
import { FormErrors, ProfileSelect, TextField, useFormValues } from './fields';

export interface IDeployFormProps {
  initial: IDeployValues;
  profiles: ISchedulerProfile[];
  errors: string[];
  onChange: (values: IDeployValues) => void;
}

export function DeployForm(props: IDeployFormProps): React.ReactElement {
  const { values, field } = useFormValues(props.initial, props.onChange);
  const line = deployLine(values);
  return (
    <form className="shipyard-form shipyard-deploy-form" onSubmit={e => e.preventDefault()}>
      <FormErrors errors={props.errors} />
      <TextField
        label="Model"
        name="shipyard-deploy-model"
        placeholder="model, an MLflow run id, or models:/name/3"
        {...field('model')}
      />
      <p className="shipyard-muted">
        A variable holding a fitted model in this notebook's kernel, an MLflow run id (32 hex
        digits) or a registered version <code>models:/NAME/VERSION</code>.
      </p>
      <TextField
        label="Deployment name"
        name="shipyard-deploy-name"
        placeholder="churn-model"
        {...field('name')}
      />
      <p className="shipyard-muted">
        Lowercase letters, digits and single dashes, at most 40; deploying a name again adds a
        version.
      </p>
      <ProfileSelect
        name="shipyard-deploy-profile"
        profiles={props.profiles}
        first={<option value="">This server's profile (default)</option>}
        {...field('profile')}
      />
      <div className="shipyard-deploy-preview" data-valid={line.ok ? 'true' : 'false'}>
        {line.ok ? (
          <>
            Adds and runs a cell: <code>{line.line}</code>
          </>
        ) : (
          <span className="shipyard-muted">{line.errors[0]}</span>
        )}
      </div>
    </form>
  );
}
