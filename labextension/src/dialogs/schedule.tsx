/**
 * The Schedule… dialog: schedule the notebook as a job (POST /scheduler/jobs), or, when
 * its folder holds pipeline files, one of those pipelines on the cron typed.
 *
 * The scheduler is the judge of what is typed: the dialog first asks it which parameters
 * the notebook declares (``POST /previews/parameters``, papermill's inspector), the form
 * shows its previews while the user types (./scheduleForm.tsx), and on "Schedule" the
 * changed parameters' texts are read by the service once more, into the values the job
 * gets. The notebook is saved first, so the job runs what the user sees; a refusal of the
 * service (or a problem found before sending) reopens the dialog with every value as
 * typed and the message on top, so nothing is lost.
 *
 * A pipeline (a ``pipeline.yaml`` or ``*.pipeline.yaml`` beside the notebook, offered first
 * when one of its steps runs the notebook) is scheduled as "Schedule pipeline" in the
 * file browser does it (./schedulePipeline.tsx), its cron trigger written into the file
 * first (``logic/schedulePipeline.ts``): the notebook is saved, the file gets the trigger,
 * the scheduler reads the file. A refusal puts the file back as it was and reopens the
 * dialog with the scheduler's file:line messages.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';

import { errorMessage } from '../api/request';
import type { SchedulerService } from '../api/scheduler';
import type { ShipyardServerService } from '../api/server';
import type {
  INotebookContent,
  ISchedulerParameter,
  ISchedulerProfile,
  JSONValue,
  TimeZoneName
} from '../api/types';
import { browserTimeZone, formatInZone } from '../logic/cron';
import {
  changedParameterTexts,
  initialParameterTexts,
  initialProfile,
  IScheduleValues,
  scheduleRequest
} from '../logic/forms';
import { defaultJobName } from '../logic/names';
import { messageLines } from '../logic/pipelines';
import { type IPipelineChoice, pipelineChoices, withCronTrigger } from '../logic/schedulePipeline';
import { FormBody } from './body';
import { createOrUpdatePipeline, showScheduledPipeline } from './schedulePipeline';
import { ISchedulePreviews, ScheduleForm } from './scheduleForm';

export const DEFAULT_CRON = '0 6 * * *';

/** What the Schedule dialog needs to know about the notebook. */
export interface IScheduleTarget {
  /** The notebook's path relative to the server root (the user's home). */
  path: string;
  /** The notebook as it is now (nbformat JSON), for the scheduler to read its parameters. */
  notebook(): INotebookContent;
  /** Save the notebook (before the job snapshots it). */
  save(): Promise<void>;
  /** The pipeline files of the notebook's folder (home-relative path and text); none: []. */
  pipelineFiles?(): Promise<{ path: string; text: string }[]>;
  /** A file's text, read again (home-relative path). */
  readFile?(path: string): Promise<string>;
  /** Write a file's text (home-relative path). */
  writeFile?(path: string, text: string): Promise<void>;
}

/**
 * Schedule the pipeline of ``values.pipeline`` on the typed cron: write the trigger into
 * its file, hand the file to the scheduler; the messages that stop it, or null when done.
 */
async function schedulePipeline(
  scheduler: SchedulerService,
  target: IScheduleTarget,
  values: IScheduleValues,
  onScheduled: () => void
): Promise<string[] | null> {
  const path = values.pipeline as string;
  const expression = values.cron.trim();
  const timezone = values.timezone.trim();
  if (!target.readFile || !target.writeFile) {
    return ["This notebook cannot reach its folder's files to schedule a pipeline."];
  }
  try {
    await scheduler.previewCron({ expression, timezone: timezone as TimeZoneName, count: 1 });
  } catch (error) {
    return [errorMessage(error)];
  }
  try {
    await target.save();
  } catch (error) {
    return [`Could not save the notebook first: ${errorMessage(error)}`];
  }
  let before: string;
  try {
    before = await target.readFile(path);
  } catch (error) {
    return [`Could not read ${path}: ${errorMessage(error)}`];
  }
  const edited = withCronTrigger(before, expression, timezone);
  if (!edited.ok) {
    return [edited.error];
  }
  try {
    await target.writeFile(path, edited.text);
  } catch (error) {
    return [`Could not write the trigger into ${path}: ${errorMessage(error)}`];
  }
  let answer: Awaited<ReturnType<typeof createOrUpdatePipeline>>;
  try {
    answer = await createOrUpdatePipeline(scheduler, path);
  } catch (error) {
    // refused: the file goes back to what it was, and the dialog shows why
    const restored = await target.writeFile(path, before).then(
      () => null,
      e => `${path} keeps the new trigger: putting it back failed (${errorMessage(e)})`
    );
    return [...messageLines(errorMessage(error)), ...(restored ? [restored] : [])];
  }
  onScheduled();
  await showScheduledPipeline(answer.pipeline, answer.updated, path);
  return null;
}

/**
 * The values the scheduler reads the changed parameters' texts as, or its messages.
 */
async function parameterValues(
  scheduler: SchedulerService,
  target: IScheduleTarget,
  declared: ISchedulerParameter[],
  inputs: Record<string, string>
): Promise<{ ok: true; values: Record<string, JSONValue> } | { ok: false; errors: string[] }> {
  const changed = changedParameterTexts(declared, inputs);
  if (!Object.keys(changed).length) {
    return { ok: true, values: {} };
  }
  const answer = await scheduler.previewParameters(target.notebook(), changed);
  const errors = answer.values.filter(v => v.error).map(v => v.error as string);
  if (errors.length) {
    return { ok: false, errors };
  }
  return {
    ok: true,
    values: Object.fromEntries(answer.values.map(v => [v.name, v.value as JSONValue]))
  };
}

/**
 * Show the Schedule dialog for ``target`` until the job is created or the user cancels.
 *
 * @returns whether a job (or a pipeline) was scheduled.
 */
export async function scheduleNotebook(
  target: IScheduleTarget,
  clients: { scheduler: SchedulerService; server: ShipyardServerService },
  onScheduled: () => void
): Promise<boolean> {
  const scheduler = clients.scheduler;
  const [profiles, serverProfile, declared, pipelines] = await Promise.all([
    scheduler.profiles().then(
      list => ({ list, error: null as string | null }),
      error => ({ list: [] as ISchedulerProfile[], error: errorMessage(error) })
    ),
    clients.server.profile().then(
      p => p.profile?.slug ?? null,
      () => null
    ),
    scheduler.previewParameters(target.notebook()).then(
      answer => ({ list: answer.parameters, error: null as string | null }),
      error => ({ list: [] as ISchedulerParameter[], error: errorMessage(error) })
    ),
    // the folder's pipeline files: a folder that cannot be listed offers the job alone
    (target.pipelineFiles ? target.pipelineFiles() : Promise.resolve([])).then(
      files => pipelineChoices(target.path, files),
      () => [] as IPipelineChoice[]
    )
  ]);
  const previews: ISchedulePreviews = {
    cron: (body, signal) => scheduler.previewCron(body, { signal }),
    parameters: (values, signal) =>
      scheduler.previewParameters(target.notebook(), values, { signal })
  };
  let values: IScheduleValues = {
    name: defaultJobName(target.path),
    cron: DEFAULT_CRON,
    timezone: browserTimeZone(),
    profile: initialProfile(profiles.list, serverProfile),
    params: initialParameterTexts(declared.list),
    pipeline: ''
  };
  let errors: string[] = [];
  for (;;) {
    const body = new FormBody(ScheduleForm, {
      initial: values,
      profiles: profiles.list,
      profilesError: profiles.error,
      parameters: declared.list,
      parametersError: declared.error,
      errors,
      previews,
      pipelines
    });
    const result = await showDialog<IScheduleValues>({
      title: pipelines.length ? 'Schedule this notebook or a pipeline' : 'Schedule this notebook',
      body,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Schedule' })],
      focusNodeSelector: values.pipeline
        ? 'select[name="shipyard-schedule-what"]'
        : 'input[name="shipyard-job-name"]'
    });
    if (!result.button.accept || !result.value) {
      return false;
    }
    values = result.value;
    if (values.pipeline) {
      const stopped = await schedulePipeline(scheduler, target, values, onScheduled);
      if (stopped === null) {
        return true;
      }
      errors = stopped;
      continue;
    }
    let parameters: Record<string, JSONValue>;
    try {
      const read = await parameterValues(scheduler, target, declared.list, values.params);
      if (!read.ok) {
        errors = read.errors;
        continue;
      }
      parameters = read.values;
    } catch (error) {
      errors = [`Could not check the parameters: ${errorMessage(error)}`];
      continue;
    }
    const request = scheduleRequest(values, target.path, parameters);
    if (!request.ok) {
      errors = request.errors;
      continue;
    }
    try {
      await target.save();
    } catch (error) {
      errors = [`Could not save the notebook first: ${errorMessage(error)}`];
      continue;
    }
    try {
      const job = await scheduler.createJob(request.body);
      const next = job.triggers
        .map(t => t.next_fire_at)
        .filter((t): t is string => !!t)
        .sort()[0];
      const when = next ? `; next run ${formatInZone(next, values.timezone.trim())}` : '';
      Notification.success(`Scheduled ${job.name} (profile ${job.profile})${when}.`, {
        autoClose: 5000
      });
      onScheduled();
      return true;
    } catch (error) {
      const message = errorMessage(error);
      Notification.error(`Could not schedule ${request.body.name}: ${message}`, {
        autoClose: 8000
      });
      errors = [message];
    }
  }
}
