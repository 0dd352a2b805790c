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

export interface IScheduleFormProps {
  initial: IScheduleValues;
  profiles: ISchedulerProfile[];
  profilesError: string | null;
  parameters: IParameter[];
  errors: string[];
  onChange: (values: IScheduleValues) => void;
}

export function ScheduleForm(props: IScheduleFormProps): React.ReactElement {
  const [values, setValues] = React.useState<IScheduleValues>(props.initial);
  const set = (patch: Partial<IScheduleValues>) => {
    const next = { ...values, ...patch };
    setValues(next);
    props.onChange(next);
  };
  const preview = React.useMemo(
    () => previewCron(values.cron, values.timezone.trim(), 3),
    [values.cron, values.timezone]
  );
  const knownProfile = props.profiles.some(p => p.slug === values.profile);
  return (
    <form className="shipyard-form shipyard-schedule-form" onSubmit={e => e.preventDefault()}>
      {props.errors.length ? (
        <div className="shipyard-error shipyard-dialog-error" role="alert">
          {props.errors.map((e, i) => (
            <div key={i}>{e}</div>
          ))}
        </div>
      ) : null}
      <label>
        <span>Job name</span>
        <input
          className="jp-mod-styled"
          name="shipyard-job-name"
          value={values.name}
          spellCheck={false}
          autoComplete="off"
          onChange={e => set({ name: e.target.value })}
        />
      </label>
      <div className="shipyard-form-row">
        <label>
          <span>Cron</span>
          <input
            className="jp-mod-styled"
            name="shipyard-cron"
            value={values.cron}
            spellCheck={false}
            autoComplete="off"
            placeholder="minute hour day-of-month month day-of-week"
            onChange={e => set({ cron: e.target.value })}
          />
        </label>
        <label>
          <span>Time zone</span>
          <input
            className="jp-mod-styled"
            name="shipyard-tz"
            value={values.timezone}
            spellCheck={false}
            autoComplete="off"
            placeholder="Europe/Berlin"
            onChange={e => set({ timezone: e.target.value })}
          />
        </label>
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
      <label>
        <span>Profile</span>
        <select
          className="jp-mod-styled"
          name="shipyard-profile"
          value={values.profile}
          onChange={e => set({ profile: e.target.value })}
        >
          {!knownProfile ? (
            <option value={values.profile}>{values.profile || '(choose a profile)'}</option>
          ) : null}
          {props.profiles.map(p => (
            <option key={p.slug} value={p.slug} title={p.description}>
              {p.display_name} ({p.slug}){p.default ? ' – default' : ''}
            </option>
          ))}
        </select>
      </label>
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
              <label key={p.name} className="shipyard-param">
                <span>
                  {p.name}
                  {p.annotation ? <span className="shipyard-muted">: {p.annotation}</span> : null}
                </span>
                <input
                  className="jp-mod-styled"
                  name={`shipyard-param-${p.name}`}
                  data-type={p.type ?? 'any'}
                  value={values.params[p.name] ?? parameterInputText(p)}
                  spellCheck={false}
                  autoComplete="off"
                  onChange={e => set({ params: { ...values.params, [p.name]: e.target.value } })}
                />
              </label>
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
