/**
 * The Schedule dialog's form: name, cron with the scheduler's preview of it, time zone,
 * profile and one input per parameter of the notebook's ``parameters`` cell. Plain React
 * (no JupyterLab imports), so it renders in unit tests; ./schedule.tsx puts it in a
 * JupyterLab Dialog.
 *
 * The scheduler judges what is typed, nobody else: a pause in the typing asks its preview
 * routes (``POST /previews/cron``: the next runs as it will fire them, daylight-saving
 * changes included; ``POST /previews/parameters``: each changed value read as the
 * notebook's type), the form says "checking…" while it waits and shows the service's own
 * message for what it refuses.
 */
import * as React from 'react';

import type {
  ICronPreview,
  ICronPreviewRequest,
  IParametersPreview,
  ISchedulerParameter,
  ISchedulerProfile,
  TimeZoneName
} from '../api/types';
import { describeCron, formatInZone } from '../logic/cron';
import { changedParameterTexts, type IScheduleValues } from '../logic/forms';
import { choiceLabel, type IPipelineChoice } from '../logic/schedulePipeline';
import { FormErrors, IFormValues, ProfileSelect, TextField, useFormValues } from './fields';
import { Preview, usePreview } from './usePreview';

/** How many next runs the form lists. */
export const NEXT_RUNS = 3;

/** The scheduler's preview routes, as the form asks them. */
export interface ISchedulePreviews {
  cron(body: ICronPreviewRequest, signal: AbortSignal): Promise<ICronPreview>;
  /** Read ``values`` (parameter name → text) for the notebook being scheduled. */
  parameters(values: Record<string, string>, signal: AbortSignal): Promise<IParametersPreview>;
}

export interface IScheduleFormProps {
  initial: IScheduleValues;
  profiles: ISchedulerProfile[];
  profilesError: string | null;
  /** The notebook's parameters, as the scheduler read its ``parameters`` cell. */
  parameters: ISchedulerParameter[];
  /** Why the notebook's parameters could not be read (null: they were). */
  parametersError: string | null;
  errors: string[];
  previews: ISchedulePreviews;
  onChange: (values: IScheduleValues) => void;
  /**
   * Pipeline files the dialog may schedule instead of the notebook (those of its folder,
   * those with a step running it first); none: the notebook only.
   */
  pipelines?: IPipelineChoice[];
}

/** The form, asking the scheduler about the cron expression and the changed parameters. */
export function ScheduleForm(props: IScheduleFormProps): React.ReactElement {
  const form = useFormValues(props.initial, props.onChange);
  const { values } = form;
  const cron = usePreview(
    { expression: values.cron, timezone: values.timezone.trim() },
    (key, signal) =>
      props.previews.cron(
        { expression: key.expression, timezone: key.timezone as TimeZoneName, count: NEXT_RUNS },
        signal
      )
  );
  const changed = changedParameterTexts(props.parameters, values.params);
  const params = usePreview(changed, (key, signal) =>
    Object.keys(key).length
      ? props.previews.parameters(key, signal)
      : Promise.resolve<IParametersPreview | null>(null)
  );
  return <ScheduleFields {...props} form={form} cron={cron} params={params} />;
}

export interface IScheduleFieldsProps extends Omit<IScheduleFormProps, 'previews' | 'onChange'> {
  form: IFormValues<IScheduleValues>;
  /** The scheduler's answer about the cron expression and time zone. */
  cron: Preview<ICronPreview>;
  /** Its answer about the changed parameters' texts (null: none changed). */
  params: Preview<IParametersPreview | null>;
}

/** The form's fields with the previews as they stand (rendered as is in unit tests). */
export function ScheduleFields(props: IScheduleFieldsProps): React.ReactElement {
  const { values, set, field } = props.form;
  const { cron, params } = props;
  const knownProfile = props.profiles.some(p => p.slug === values.profile);
  const pipelines = props.pipelines ?? [];
  const pipeline = values.pipeline
    ? (pipelines.find(p => p.path === values.pipeline) ?? null)
    : null;
  const paramErrors: Record<string, string> = {};
  if (params.status === 'ok' && params.data) {
    for (const v of params.data.values) {
      if (v.error) {
        paramErrors[v.name] = v.error;
      }
    }
  }
  return (
    <form className="shipyard-form shipyard-schedule-form" onSubmit={e => e.preventDefault()}>
      <FormErrors errors={props.errors} />
      {pipelines.length ? (
        <label>
          <span>Schedule</span>
          <select
            className="jp-mod-styled"
            name="shipyard-schedule-what"
            value={pipeline ? pipeline.path : ''}
            onChange={e => set({ pipeline: e.target.value })}
          >
            <option value="">This notebook, as a job</option>
            {pipelines.map(p => (
              <option key={p.path} value={p.path} title={p.path}>
                {choiceLabel(p)}
              </option>
            ))}
          </select>
        </label>
      ) : null}
      {pipeline ? (
        <p className="shipyard-muted shipyard-schedule-pipeline-note" data-pipeline={pipeline.path}>
          Schedule the pipeline <strong>{pipeline.name ?? pipeline.path}</strong>: the cron trigger
          goes into <code>{pipeline.path}</code> (replacing a cron trigger there), then the
          scheduler reads the file and its notebooks as saved. Its steps keep their own profiles and
          parameters.
        </p>
      ) : (
        <TextField label="Job name" name="shipyard-job-name" {...field('name')} />
      )}
      <div className="shipyard-form-row">
        <TextField
          label="Cron"
          name="shipyard-cron"
          placeholder="minute hour day-of-month month day-of-week"
          {...field('cron')}
        />
        <TextField
          label="Time zone"
          name="shipyard-tz"
          placeholder="Europe/Berlin"
          {...field('timezone')}
        />
      </div>
      <div
        className={`shipyard-cron-preview${
          cron.status === 'error'
            ? ' shipyard-invalid'
            : cron.status === 'checking'
              ? ' shipyard-checking'
              : ''
        }`}
        data-valid={cron.status === 'ok' ? 'true' : cron.status === 'error' ? 'false' : 'checking'}
        aria-live="polite"
        aria-busy={cron.status === 'checking'}
      >
        {cron.status === 'ok'
          ? describeCron(cron.data.expression) || cron.data.expression
          : cron.status === 'error'
            ? cron.message
            : 'checking…'}
      </div>
      {cron.status === 'ok' ? (
        <ol className="shipyard-next-runs" aria-label="Next runs">
          {cron.data.times.map(t => (
            <li key={t} data-time={t}>
              {formatInZone(t, cron.data.timezone)}
            </li>
          ))}
        </ol>
      ) : null}
      {pipeline ? null : (
        <JobFields {...props} paramErrors={paramErrors} knownProfile={knownProfile} />
      )}
    </form>
  );
}

/** The fields only a job has: its profile and the notebook's parameters. */
function JobFields(
  props: IScheduleFieldsProps & { paramErrors: Record<string, string>; knownProfile: boolean }
): React.ReactElement {
  const { values, set, field } = props.form;
  const { params, paramErrors, knownProfile } = props;
  return (
    <>
      <ProfileSelect
        name="shipyard-profile"
        profiles={props.profiles}
        first={
          !knownProfile ? (
            <option value={values.profile}>{values.profile || '(choose a profile)'}</option>
          ) : null
        }
        markDefault
        {...field('profile')}
      />
      {props.profilesError ? (
        <div className="shipyard-error" role="alert">
          Profiles: {props.profilesError}
        </div>
      ) : null}
      <fieldset className="shipyard-params" aria-busy={params.status === 'checking'}>
        <legend>Parameters</legend>
        {props.parametersError ? (
          <div className="shipyard-error" role="alert">
            Parameters: {props.parametersError}
          </div>
        ) : props.parameters.length ? (
          <>
            <p className="shipyard-muted">
              From the cell tagged <code>parameters</code>. Only values you change are sent; the
              others keep following the notebook.
              {params.status === 'checking' ? (
                <span className="shipyard-checking"> Checking…</span>
              ) : null}
            </p>
            {props.parameters.map(p => (
              <React.Fragment key={p.name}>
                <TextField
                  className="shipyard-param"
                  label={
                    <>
                      {p.name}
                      {p.type ? <span className="shipyard-muted">: {p.type}</span> : null}
                      {p.help ? <span className="shipyard-muted"> ({p.help})</span> : null}
                    </>
                  }
                  name={`shipyard-param-${p.name}`}
                  dataType={p.type ?? 'any'}
                  value={values.params[p.name] ?? p.text ?? ''}
                  onChange={v => set({ params: { ...values.params, [p.name]: v } })}
                />
                {paramErrors[p.name] ? (
                  <div
                    className="shipyard-error shipyard-param-error"
                    data-param={p.name}
                    role="alert"
                  >
                    {paramErrors[p.name]}
                  </div>
                ) : null}
              </React.Fragment>
            ))}
            {params.status === 'error' ? (
              <div className="shipyard-error" role="alert">
                {params.message}
              </div>
            ) : null}
          </>
        ) : (
          <p className="shipyard-muted">
            No cell tagged <code>parameters</code>: the job runs the notebook as it is. Tag a cell
            of <code>name = value</code> lines to make them parameters.
          </p>
        )}
      </fieldset>
    </>
  );
}
