/**
 * The Deploy dialog's form: the model, the deployment's name and an optional profile, with
 * the ``%deploy`` line it will run. Plain React (no JupyterLab imports), so it renders in
 * unit tests; ./deploy.tsx puts it in a JupyterLab Dialog.
 */
import * as React from 'react';

import type { ISchedulerProfile } from '../api/types';
import { deployLine, IDeployValues } from '../logic/forms';

export interface IDeployFormProps {
  initial: IDeployValues;
  profiles: ISchedulerProfile[];
  errors: string[];
  onChange: (values: IDeployValues) => void;
}

export function DeployForm(props: IDeployFormProps): React.ReactElement {
  const [values, setValues] = React.useState<IDeployValues>(props.initial);
  const set = (patch: Partial<IDeployValues>) => {
    const next = { ...values, ...patch };
    setValues(next);
    props.onChange(next);
  };
  const line = deployLine(values);
  return (
    <form className="shipyard-form shipyard-deploy-form" onSubmit={e => e.preventDefault()}>
      {props.errors.length ? (
        <div className="shipyard-error shipyard-dialog-error" role="alert">
          {props.errors.map((e, i) => (
            <div key={i}>{e}</div>
          ))}
        </div>
      ) : null}
      <label>
        <span>Model</span>
        <input
          className="jp-mod-styled"
          name="shipyard-deploy-model"
          value={values.model}
          spellCheck={false}
          autoComplete="off"
          placeholder="model, an MLflow run id, or models:/name/3"
          onChange={e => set({ model: e.target.value })}
        />
      </label>
      <p className="shipyard-muted">
        A variable holding a fitted model in this notebook's kernel, an MLflow run id (32 hex
        digits) or a registered version <code>models:/NAME/VERSION</code>.
      </p>
      <label>
        <span>Deployment name</span>
        <input
          className="jp-mod-styled"
          name="shipyard-deploy-name"
          value={values.name}
          spellCheck={false}
          autoComplete="off"
          placeholder="churn-model"
          onChange={e => set({ name: e.target.value })}
        />
      </label>
      <p className="shipyard-muted">
        Lowercase letters, digits and single dashes, at most 40; deploying a name again adds a
        version.
      </p>
      <label>
        <span>Profile</span>
        <select
          className="jp-mod-styled"
          name="shipyard-deploy-profile"
          value={values.profile}
          onChange={e => set({ profile: e.target.value })}
        >
          <option value="">This server's profile (default)</option>
          {props.profiles.map(p => (
            <option key={p.slug} value={p.slug} title={p.description}>
              {p.display_name} ({p.slug})
            </option>
          ))}
        </select>
      </label>
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
