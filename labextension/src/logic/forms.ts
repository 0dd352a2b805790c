/**
 * The Schedule and Deploy dialogs' values: checked, and turned into what is sent.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/forms.spec.ts.
 */
import type { ICreateJob, ISchedulerProfile, TimeZoneName } from '../api/types';
import { checkCronForm, isValidTimeZone, normalizeCron, previewCron, timeZoneError } from './cron';
import { checkDeploymentName, checkJobName, checkProfileSlug, classifyModelRef } from './names';
import { changedParameters, type IParameter } from './parameters';

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
}

/**
 * The POST /jobs body for ``values``, or the problems to fix first (all of them at once).
 *
 * @param sourcePath the notebook, relative to the server's root (the user's home).
 * @param declared the parameters of the notebook's ``parameters`` cell.
 */
export function scheduleRequest(
  values: IScheduleValues,
  sourcePath: string,
  declared: IParameter[]
): { ok: true; body: ICreateJob } | { ok: false; errors: string[] } {
  const errors: string[] = [];
  const name = values.name.trim();
  const nameError = checkJobName(name);
  if (nameError) {
    errors.push(nameError);
  }
  const cronError = checkCronForm(values.cron);
  const timezone = values.timezone.trim();
  if (cronError) {
    errors.push(cronError);
  } else if (!isValidTimeZone(timezone)) {
    errors.push(timeZoneError(timezone));
  } else {
    const preview = previewCron(values.cron, timezone, 1);
    if (!preview.ok) {
      errors.push(preview.error);
    }
  }
  if (!values.profile) {
    errors.push('choose a profile for the job to run in');
  } else {
    const profileError = checkProfileSlug(values.profile);
    if (profileError) {
      errors.push(profileError);
    }
  }
  const { parameters, errors: paramErrors } = changedParameters(declared, values.params);
  errors.push(...paramErrors);
  if (errors.length) {
    return { ok: false, errors };
  }
  // The browser knows the zone; the scheduler's document lists the zones the service knows
  // (its tzdata), and a name only the browser knows is refused with a 400 naming it, which
  // the dialog shows: the list is the service's to check, not copied into the bundle.
  const zone = timezone as TimeZoneName;
  return {
    ok: true,
    body: {
      name,
      source_path: sourcePath,
      profile: values.profile,
      parameters,
      triggers: [{ kind: 'cron', expression: normalizeCron(values.cron), timezone: zone }]
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
