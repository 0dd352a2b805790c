/**
 * The Schedule… dialog: schedule the notebook as a job (POST /scheduler/jobs).
 *
 * The form previews the cron expression while it is typed (cronstrue's text and the next
 * three runs in the chosen time zone, with the service's rules). On "Schedule" the
 * notebook is saved first, so the job runs what the user sees; a refusal of the service
 * (or a problem found before sending) reopens the dialog with every value as typed and
 * the message on top, so nothing is lost.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';

import { errorMessage } from '../api/request';
import type { SchedulerService } from '../api/scheduler';
import type { ShipyardServerService } from '../api/server';
import type { ISchedulerProfile } from '../api/types';
import { browserTimeZone, formatInZone, previewCron } from '../logic/cron';
import { initialProfile, IScheduleValues, scheduleRequest } from '../logic/forms';
import { defaultJobName } from '../logic/names';
import { IParameter, parameterInputText } from '../logic/parameters';
import { FormBody } from './body';
import { ScheduleForm } from './scheduleForm';

export const DEFAULT_CRON = '0 6 * * *';

/** What the Schedule dialog needs to know about the notebook. */
export interface IScheduleTarget {
  /** The notebook's path relative to the server root (the user's home). */
  path: string;
  /** What its cell tagged ``parameters`` declares (empty: no such cell). */
  parameters: IParameter[];
  /** Save the notebook (before the job snapshots it). */
  save(): Promise<void>;
}

/**
 * Show the Schedule dialog for ``target`` until the job is created or the user cancels.
 *
 * @returns whether a job was created.
 */
export async function scheduleNotebook(
  target: IScheduleTarget,
  clients: { scheduler: SchedulerService; server: ShipyardServerService },
  onScheduled: () => void
): Promise<boolean> {
  const [profiles, serverProfile] = await Promise.all([
    clients.scheduler.profiles().then(
      list => ({ list, error: null as string | null }),
      error => ({ list: [] as ISchedulerProfile[], error: errorMessage(error) })
    ),
    clients.server.profile().then(
      p => p.profile?.slug ?? null,
      () => null
    )
  ]);
  const defaultProfile = initialProfile(profiles.list, serverProfile);
  let values: IScheduleValues = {
    name: defaultJobName(target.path),
    cron: DEFAULT_CRON,
    timezone: browserTimeZone(),
    profile: defaultProfile,
    params: Object.fromEntries(target.parameters.map(p => [p.name, parameterInputText(p)]))
  };
  let errors: string[] = [];
  for (;;) {
    const body = new FormBody(ScheduleForm, {
      initial: values,
      profiles: profiles.list,
      profilesError: profiles.error,
      parameters: target.parameters,
      errors
    });
    const result = await showDialog<IScheduleValues>({
      title: 'Schedule this notebook',
      body,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Schedule' })],
      focusNodeSelector: 'input[name="shipyard-job-name"]'
    });
    if (!result.button.accept || !result.value) {
      return false;
    }
    values = result.value;
    const request = scheduleRequest(values, target.path, target.parameters);
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
      const job = await clients.scheduler.createJob(request.body);
      const preview = previewCron(values.cron, values.timezone.trim(), 1);
      const when =
        preview.ok && preview.next.length
          ? `; next run ${formatInZone(preview.next[0], values.timezone.trim())}`
          : '';
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
