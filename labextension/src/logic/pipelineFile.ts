/**
 * "Schedule pipeline" on a pipeline file in the file browser: which files it is offered on,
 * which pipeline a file replaces, and the scheduler's answer in words. Pure: the command
 * (../pipelineFile.ts) and its dialog (../dialogs/schedulePipeline.tsx) only call these.
 *
 * The scheduler is the judge of the file: it reads it (POST api/pipelines {"path"}), and
 * answers 409 when the file's ``name`` is one of the user's pipelines already; that
 * pipeline is then found in the list and read again from this file (PUT api/pipelines/<id>
 * {"path"}), as editing a pipeline.yaml and scheduling it again means.
 */
import type { IPipeline, IPipelineStepDefinition } from '../api/types';
import { pipelineTriggerLines } from './pipelines';

/** ``pipeline.yaml`` or ``<anything>.pipeline.yaml``: the files the command is offered on. */
export function isPipelineFile(name: string | null | undefined): boolean {
  if (!name) {
    return false;
  }
  return name === 'pipeline.yaml' || (name.endsWith('.pipeline.yaml') && name.length > 14);
}

/**
 * The pipeline name a 409 of POST api/pipelines says is taken (``you have a pipeline named
 * 'churn' (ab12…): update it …``), or null for any other message.
 */
export function takenPipelineName(message: string): string | null {
  const match = /pipeline named '([^']+)'/.exec(message);
  return match ? match[1] : null;
}

/**
 * The pipeline a 409 refers to: the one named as the message says, else the one read from
 * the same file. Null when neither is in the list (then the 409 is shown as it is).
 */
export function pipelineToUpdate(
  pipelines: readonly IPipeline[],
  conflict: string,
  path: string
): IPipeline | null {
  const name = takenPipelineName(conflict);
  return (
    (name !== null ? pipelines.find(p => p.name === name) : undefined) ??
    pipelines.find(p => p.source_path === path) ??
    null
  );
}

/**
 * One step of the pipeline in a line, in run order: ``train: churn/train.ipynb, after
 * features-a and features-b, when all succeeded, profile gpu``.
 */
export function stepLine(step: IPipelineStepDefinition): string {
  const what = step.notebook ?? (step.job_id ? `job ${step.job_id}` : step.type);
  const parts = [`${step.id}: ${what}`];
  if (step.needs.length) {
    parts.push(`after ${joinWords(step.needs)}`);
  }
  if (step.needs.length && step.run_if && step.run_if !== 'all_succeeded') {
    parts.push(`when ${step.run_if.replace(/_/g, ' ')}`);
  }
  if (step.profile) {
    parts.push(`profile ${step.profile}`);
  }
  return parts.join(', ');
}

function joinWords(words: readonly string[]): string {
  return words.length <= 1
    ? words.join('')
    : `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`;
}

/** What the dialog shows after the scheduler took the file. */
export interface IScheduledPipeline {
  title: string;
  /** One line per step, in run order. */
  steps: string[];
  /** One line per trigger; empty: runs start with Run only. */
  triggers: string[];
  /** What happens next, in a sentence. */
  note: string;
}

/** The scheduler's answer in words; ``updated``: an existing pipeline was read again. */
export function scheduledPipeline(pipeline: IPipeline, updated: boolean): IScheduledPipeline {
  const triggers = pipelineTriggerLines(pipeline).map(t => t.text);
  const starts = triggers.length
    ? pipeline.paused
      ? 'It is paused: its triggers start no run until you resume it in the Shipyard panel.'
      : 'Its triggers start runs from now on; Run in the Shipyard panel starts one at once.'
    : 'It has no triggers: start its runs with Run in the Shipyard panel.';
  return {
    title: updated
      ? `Pipeline ${pipeline.name} updated (version ${pipeline.version})`
      : `Pipeline ${pipeline.name} scheduled`,
    steps: pipeline.steps.map(stepLine),
    triggers,
    note: updated ? `${starts} Runs already started keep the definition they started with.` : starts
  };
}
