/**
 * The pieces the dialogs' forms share: their values' state, the errors above the fields,
 * a labelled text input and a labelled profile select. Plain React (no JupyterLab
 * imports), so the forms render in unit tests.
 *
 * Every field is an ``<input>`` or ``<select>`` inside its ``<label>``, which associates
 * the label with it without ids; the ``name`` says which field it is (the browser tests
 * and the dialogs' ``focusNodeSelector`` find fields by it).
 */
import * as React from 'react';

import type { ISchedulerProfile } from '../api/types';

/** The keys of ``T`` whose values are strings. */
type TextKey<T> = { [K in keyof T]: T[K] extends string ? K : never }[keyof T];

/** A form's values, and the ways to change them. */
export interface IFormValues<T> {
  values: T;
  /** Merge ``patch`` into the values and report the new values. */
  set(patch: Partial<T>): void;
  /** The ``value`` and ``onChange`` of the field that edits the string at ``key``. */
  field(key: TextKey<T>): { value: string; onChange: (value: string) => void };
}

/** A form's values, starting at ``initial``; every change is reported to ``onChange``. */
export function useFormValues<T extends object>(
  initial: T,
  onChange: (values: T) => void
): IFormValues<T> {
  const [values, setValues] = React.useState<T>(initial);
  const set = (patch: Partial<T>) => {
    const next = { ...values, ...patch };
    setValues(next);
    onChange(next);
  };
  const field = (key: TextKey<T>) => ({
    value: values[key] as string,
    onChange: (value: string) => set({ [key]: value } as Partial<T>)
  });
  return { values, set, field };
}

/** The problems that stopped the last try, one a line, above the fields (none: nothing). */
export function FormErrors(props: { errors: string[] }): React.ReactElement | null {
  return props.errors.length ? (
    <div className="shipyard-error shipyard-dialog-error" role="alert">
      {props.errors.map((e, i) => (
        <div key={i}>{e}</div>
      ))}
    </div>
  ) : null;
}

export interface ITextFieldProps {
  /** What the label says. */
  label: React.ReactNode;
  /** The input's ``name``. */
  name: string;
  value: string;
  onChange: (value: string) => void;
  placeholder?: string;
  /** The label's class. */
  className?: string;
  /** The input's ``data-type`` (a parameter's type). */
  dataType?: string;
}

/** A labelled one-line text input (no spell checking, no autocompletion). */
export function TextField(props: ITextFieldProps): React.ReactElement {
  return (
    <label className={props.className}>
      <span>{props.label}</span>
      <input
        className="jp-mod-styled"
        name={props.name}
        data-type={props.dataType}
        value={props.value}
        spellCheck={false}
        autoComplete="off"
        placeholder={props.placeholder}
        onChange={e => props.onChange(e.target.value)}
      />
    </label>
  );
}

export interface IProfileSelectProps {
  /** The select's ``name``. */
  name: string;
  /** The chosen profile's slug. */
  value: string;
  onChange: (value: string) => void;
  profiles: ISchedulerProfile[];
  /** An option before the profiles' (the default, or a value that is not among them). */
  first?: React.ReactNode;
  /** Whether the hub's default profile says so. */
  markDefault?: boolean;
}

/**
 * A labelled "Profile" select: an option a profile, titled with its description. One this
 * machine cannot run is shown disabled with the reason (as the spawn form's card is).
 */
export function ProfileSelect(props: IProfileSelectProps): React.ReactElement {
  return (
    <label>
      <span>Profile</span>
      <select
        className="jp-mod-styled"
        name={props.name}
        value={props.value}
        onChange={e => props.onChange(e.target.value)}
      >
        {props.first}
        {props.profiles.map(p => {
          const unavailable = p.available === false;
          const reason = p.unavailable_reason || 'not available here';
          return (
            <option
              key={p.slug}
              value={p.slug}
              title={unavailable ? `Not available: ${reason}` : p.description}
              disabled={unavailable}
            >
              {p.display_name} ({p.slug})
              {unavailable
                ? ` – not available: ${reason}`
                : props.markDefault && p.default
                  ? ' – default'
                  : ''}
            </option>
          );
        })}
      </select>
    </label>
  );
}
