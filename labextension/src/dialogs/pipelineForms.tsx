/**
 * The Pipelines section's forms: "Add pipeline" (the pipeline.yaml's path) and "Run" (a
 * value per parameter the pipeline declares). Plain React (no JupyterLab imports), so they
 * render in unit tests; ./pipeline.tsx shows them in JupyterLab's dialogs.
 */
import * as React from 'react';

import { FormErrors, TextField, useFormValues } from './fields';

export interface IAddPipelineValues {
  /** The pipeline.yaml, relative to the user's home. */
  path: string;
}

export function AddPipelineForm(props: {
  initial: IAddPipelineValues;
  /** The service's refusal of the last try, a line each (file:line:column errors). */
  errors: string[];
  onChange: (values: IAddPipelineValues) => void;
}): React.ReactElement {
  const form = useFormValues(props.initial, props.onChange);
  return (
    <div className="shipyard-form shipyard-add-pipeline">
      <FormErrors errors={props.errors} />
      <TextField
        label="Pipeline file, relative to your home"
        name="shipyard-pipeline-path"
        placeholder="churn/pipeline.yaml"
        {...form.field('path')}
      />
      <p className="shipyard-muted">
        Its steps' notebooks are found relative to its folder. A file with mistakes is refused with
        every one of them, by line.
      </p>
    </div>
  );
}

export interface IRunPipelineValues {
  /** Parameter name → the text of its input. */
  params: Record<string, string>;
}

export function RunPipelineForm(props: {
  initial: IRunPipelineValues;
  /** The pipeline's parameters with their defaults, as its file declares them. */
  declared: Record<string, unknown>;
  errors: string[];
  onChange: (values: IRunPipelineValues) => void;
}): React.ReactElement {
  const { values, set } = useFormValues(props.initial, props.onChange);
  return (
    <div className="shipyard-form shipyard-run-pipeline">
      <FormErrors errors={props.errors} />
      <fieldset className="shipyard-params">
        <legend>Parameters</legend>
        <p className="shipyard-muted">
          From the pipeline file. Only values you change are sent; the others keep the file's. Text
          parameters take what you type; the others a JSON value.
        </p>
        {Object.entries(props.declared).map(([name, value]) => (
          <TextField
            key={name}
            className="shipyard-param"
            label={
              <>
                {name}
                <span className="shipyard-muted">: {jsonType(value)}</span>
              </>
            }
            name={`shipyard-param-${name}`}
            dataType={jsonType(value)}
            value={values.params[name] ?? ''}
            onChange={v => set({ params: { ...values.params, [name]: v } })}
          />
        ))}
      </fieldset>
    </div>
  );
}

/** The JSON type of a default: string, number, boolean, null, list or object. */
function jsonType(value: unknown): string {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'list';
  }
  return typeof value === 'object' ? 'object' : typeof value;
}
