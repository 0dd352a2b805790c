/**
 * The Schedule and Deploy dialogs' values: checked, and turned into what is sent.
 *
 * The cron expression, its time zone and the parameters' values are the scheduler's to
 * judge: the dialog shows its previews (``POST /previews/cron`` and
 * ``/previews/parameters``) and sends the values the service read from the text typed.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/forms.spec.ts.
 */
import type {
  ICreateJob,
  ISchedulerParameter,
  ISchedulerProfile,
  JSONValue,
  TimeZoneName
} from '../api/types';
import { checkDeploymentName, checkJobName, checkProfileSlug, classifyModelRef } from './names';

/**
 * The profile a dialog starts on: the server's own, else the hub's default, else the first,
 * of those this machine can run (a GPU profile without a GPU is listed, never chosen).
 */
export function initialProfile(
  profiles: ISchedulerProfile[],
  serverProfile: string | null
): string {
  const usable = profiles.filter(p => p.available !== false);
  return (
    usable.find(p => p.slug === serverProfile)?.slug ??
    usable.find(p => p.default)?.slug ??
    usable[0]?.slug ??
    serverProfile ??
    ''
  );
}

/** What the Schedule dialog holds (every input's text, so nothing typed is lost). */
export interface IScheduleValues {
  name: string;
  cron: string;
  timezone: string;
  profile: string;
  /** Parameter name → the text of its input. */
  params: Record<string, string>;
  /**
   * The pipeline file to schedule instead of the notebook (home-relative); '' or absent:
   * the notebook, as a job.
   */
  pipeline?: string;
}

/** The text each parameter's input starts with: its default, as the service shows it. */
export function initialParameterTexts(declared: ISchedulerParameter[]): Record<string, string> {
  return Object.fromEntries(declared.map(p => [p.name, p.text ?? '']));
}

/**
 * The texts for the service to read: those of the inputs that differ from their default's.
 * Unchanged ones are left out, so the job keeps following the notebook's own defaults (an
 * expression default such as ``date.today()`` stays an expression).
 */
export function changedParameterTexts(
  declared: ISchedulerParameter[],
  inputs: Readonly<Record<string, string>>
): Record<string, string> {
  const changed: Record<string, string> = {};
  for (const p of declared) {
    const text = inputs[p.name];
    if (text !== undefined && text !== (p.text ?? '')) {
      changed[p.name] = text;
    }
  }
  return changed;
}

/**
 * The POST /jobs body for ``values``, or the problems to fix first (all of them at once).
 *
 * @param sourcePath the notebook, relative to the server's root (the user's home).
 * @param parameters the values the scheduler read from the changed parameters' texts.
 */
export function scheduleRequest(
  values: IScheduleValues,
  sourcePath: string,
  parameters: Record<string, JSONValue>
): { ok: true; body: ICreateJob } | { ok: false; errors: string[] } {
  const errors: string[] = [];
  const name = values.name.trim();
  const nameError = checkJobName(name);
  if (nameError) {
    errors.push(nameError);
  }
  if (!values.profile) {
    errors.push('choose a profile for the job to run in');
  } else {
    const profileError = checkProfileSlug(values.profile);
    if (profileError) {
      errors.push(profileError);
    }
  }
  if (errors.length) {
    return { ok: false, errors };
  }
  // The scheduler's document lists the zones the service knows (its tzdata); whether the
  // text typed is one, and the expression a valid one, the service says (its previews
  // while typing, its 400 on POST): nothing is copied into the bundle.
  const zone = values.timezone.trim() as TimeZoneName;
  return {
    ok: true,
    body: {
      name,
      source_path: sourcePath,
      profile: values.profile,
      parameters,
      triggers: [{ kind: 'cron', expression: values.cron.trim(), timezone: zone }]
    }
  };
}

/** What the Deploy dialog holds. */
export interface IDeployValues {
  model: string;
  name: string;
  /** A profile slug, or '' for the magic's default (this server's profile). */
  profile: string;
}

/**
 * The ``%deploy`` line for ``values``, or the problems to fix first.
 *
 * Every part is checked to be one word without quotes or spaces, so the line needs no
 * quoting and cannot carry another option.
 */
export function deployLine(
  values: IDeployValues
): { ok: true; line: string } | { ok: false; errors: string[] } {
  const errors: string[] = [];
  const model = values.model.trim();
  const name = values.name.trim();
  const profile = values.profile.trim();
  const ref = classifyModelRef(model);
  if ('error' in ref) {
    errors.push(ref.error);
  }
  if (!name) {
    errors.push(
      'Name the deployment: lowercase letters, digits and single dashes, e.g. churn-model ' +
        '(deploying that name again adds a version).'
    );
  } else {
    const nameError = checkDeploymentName(name);
    if (nameError) {
      errors.push(nameError);
    }
  }
  const profileError = checkProfileSlug(profile);
  if (profileError) {
    errors.push(profileError);
  }
  if (errors.length) {
    return { ok: false, errors };
  }
  return {
    ok: true,
    line: `%deploy ${model} --name ${name}${profile ? ` --profile ${profile}` : ''}`
  };
}
