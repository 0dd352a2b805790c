/**
 * The Schedule dialog's form: name, cron with its live preview, time zone, profile and one
 * input per parameter of the notebook's ``parameters`` cell. Plain React (no JupyterLab
 * imports), so it renders in unit tests; ./schedule.tsx puts it in a JupyterLab Dialog.
 */
import * as React from 'react';

import type { ISchedulerProfile } from '../api/types';
import { formatInZone, previewCron } from '../logic/cron';
import type { IScheduleValues } from '../logic/forms';
import { IParameter, parameterInputText } from '../logic/parameters';
import { FormErrors, ProfileSelect, TextField, useFormValues } from './fields';

export interface IScheduleFormProps {
  initial: IScheduleValues;
  profiles: ISchedulerProfile[];
  profilesError: string | null;
  parameters: IParameter[];
  errors: string[];
  onChange: (values: IScheduleValues) => void;
}

export function ScheduleForm(props: IScheduleFormProps): React.ReactElement {
  const { values, set, field } = useFormValues(props.initial, props.onChange);
  const preview = React.useMemo(
    () => previewCron(values.cron, values.timezone.trim(), 3),
    [values.cron, values.timezone]
  );
  const knownProfile = props.profiles.some(p => p.slug === values.profile);
  return (
    <form className="shipyard-form shipyard-schedule-form" onSubmit={e => e.preventDefault()}>
      <FormErrors errors={props.errors} />
      <TextField label="Job name" name="shipyard-job-name" {...field('name')} />
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
        className={`shipyard-cron-preview${preview.ok ? '' : ' shipyard-invalid'}`}
        data-valid={preview.ok ? 'true' : 'false'}
        aria-live="polite"
      >
        {preview.ok ? preview.description : preview.error}
      </div>
      {preview.ok ? (
        <ol className="shipyard-next-runs" aria-label="Next runs">
          {preview.next.map(d => (
            <li key={d.getTime()} data-time={d.toISOString()}>
              {formatInZone(d, values.timezone.trim())}
            </li>
          ))}
        </ol>
      ) : null}
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
      <fieldset className="shipyard-params">
        <legend>Parameters</legend>
        {props.parameters.length ? (
          <>
            <p className="shipyard-muted">
              From the cell tagged <code>parameters</code>. Only values you change are sent; the
              others keep following the notebook.
            </p>
            {props.parameters.map(p => (
              <TextField
                key={p.name}
                className="shipyard-param"
                label={
                  <>
                    {p.name}
                    {p.annotation ? <span className="shipyard-muted">: {p.annotation}</span> : null}
                  </>
                }
                name={`shipyard-param-${p.name}`}
                dataType={p.type ?? 'any'}
                value={values.params[p.name] ?? parameterInputText(p)}
                onChange={v => set({ params: { ...values.params, [p.name]: v } })}
              />
            ))}
          </>
        ) : (
          <p className="shipyard-muted">
            No cell tagged <code>parameters</code>: the job runs the notebook as it is. Tag a cell
            of <code>name = value</code> lines to make them parameters.
          </p>
        )}
      </fieldset>
    </form>
  );
}
