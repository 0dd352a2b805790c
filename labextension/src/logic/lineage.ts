/**
 * A deployment version's lineage, as the Lineage dialog shows it: one section per link
 * of the chain (version → registered model → MLflow run → pipeline run and step, or the
 * scheduler's run → notebook → input files), each a list of label/value rows, then what
 * could not be resolved and why. Pure: the dialog (dialogs/lineage.tsx) only renders it.
 *
 * Digests are shown short with the full value in ``title``; a link that is null shows the
 * deployer's reason from ``missing`` in its place, so the chain reads top to bottom even
 * where it breaks.
 */
import type { ILineage, ILineageMissing, ILineageRun, JSONValue, LineageLink } from '../api/types';
import { formatMetric, shortDigest, statusLabel } from './format';

const DASH = '–';
/** How many lines of the ``%%track`` cell the dialog shows. */
export const CELL_LINES = 6;

/** One row of a section: ``title`` (the full value) when ``value`` is shortened. */
export interface ILineageRow {
  label: string;
  value: string;
  title?: string;
  /** Shown as code (ids, digests, paths). */
  code?: boolean;
}

/** One link of the chain. */
export interface ILineageSection {
  link: LineageLink | 'version';
  title: string;
  rows: ILineageRow[];
  /** The first lines of the ``%%track`` cell (MLflow run only). */
  cell?: string;
  /** Why this link is not known (from ``missing``), when it is null. */
  missing?: string;
}

/** A SHA-256 (or ``sha256:…``) as the dialog shows it: 12 hex digits, the full one in ``title``. */
export function shortSha(digest: string | null | undefined): { value: string; title?: string } {
  if (!digest) {
    return { value: DASH };
  }
  return { value: shortDigest(digest), title: digest };
}

/**
 * The first ``lines`` lines of a cell, with ``…`` and the count of the lines left out.
 * Trailing blank lines are dropped; an empty cell is ''.
 */
export function cellHead(source: string | null | undefined, lines = CELL_LINES): string {
  if (!source) {
    return '';
  }
  const all = source.replace(/\s+$/, '').split(/\r?\n/);
  if (all.length <= lines) {
    return all.join('\n');
  }
  const rest = all.length - lines;
  return `${all.slice(0, lines).join('\n')}\n… (${rest} more line${rest === 1 ? '' : 's'})`;
}

/** A parameter's value as Python would have written it in the cell: strings quoted. */
export function parameterText(value: unknown): string {
  if (value === undefined) {
    return DASH;
  }
  return JSON.stringify(value as JSONValue) ?? String(value);
}

/** ``{a: 1, b: "x"}`` → rows ``a = 1``, ``b = "x"``, sorted by name. */
function parameterRows(parameters: Record<string, unknown> | undefined): ILineageRow[] {
  return Object.keys(parameters ?? {})
    .sort()
    .map(name => ({ label: name, value: parameterText(parameters?.[name]), code: true }));
}

/** A run id (32 hex digits, or the scheduler's) shortened to 8, the full one in ``title``. */
function idRow(label: string, id: string | null | undefined): ILineageRow {
  if (!id) {
    return { label, value: DASH };
  }
  return id.length > 12
    ? { label, value: id.slice(0, 8), title: id, code: true }
    : { label, value: id, code: true };
}

function digestRow(label: string, digest: string | null | undefined): ILineageRow {
  return { label, ...shortSha(digest), code: !!digest };
}

/** The MLflow run's rows: status, notebook, git, environment, then metrics and params. */
export function runRows(run: ILineageRun): ILineageRow[] {
  const rows: ILineageRow[] = [idRow('Run', run.run_id)];
  if (run.status) {
    rows.push({ label: 'Status', value: statusLabel(run.status.toLowerCase()) });
  }
  if (run.notebook) {
    rows.push({ label: 'Notebook', value: run.notebook, code: true });
  }
  if (run.git_commit) {
    const dirty = run.git_dirty === 'true' ? ' (uncommitted changes)' : '';
    rows.push({
      label: 'Git commit',
      value: `${run.git_commit.slice(0, 10)}${dirty}`,
      title: run.git_commit,
      code: true
    });
  }
  if (run.env || run.env_digest) {
    rows.push({
      label: 'Environment',
      value: [run.env, run.env_digest ? shortDigest(run.env_digest) : null]
        .filter(Boolean)
        .join(' '),
      title: run.env_digest ?? undefined,
      code: true
    });
  }
  for (const name of Object.keys(run.metrics ?? {}).sort()) {
    rows.push({ label: `metric ${name}`, value: formatMetric(run.metrics?.[name]) });
  }
  for (const name of Object.keys(run.params ?? {}).sort()) {
    rows.push({ label: `param ${name}`, value: run.params?.[name] ?? DASH, code: true });
  }
  return rows;
}

/** The reason ``missing`` gives for ``link``, if any (several are joined). */
export function missingReason(
  missing: readonly ILineageMissing[] | undefined,
  link: LineageLink
): string | undefined {
  const reasons = (missing ?? []).filter(m => m.link === link).map(m => m.reason);
  return reasons.length ? reasons.join(' ') : undefined;
}

/**
 * The chain, one section per link, in the order it is read: the version, the registered
 * model, the MLflow run, the pipeline run and its step (or the scheduler's run when the
 * notebook ran as a job), the notebook snapshot, the input files.
 */
export function lineageSections(lineage: ILineage): ILineageSection[] {
  const { version, missing } = lineage;
  const sections: ILineageSection[] = [
    {
      link: 'version',
      title: `Version v${version.version} of ${version.name}`,
      rows: [
        { label: 'Owner', value: version.owner },
        { label: 'Model', value: version.model_uri, code: true },
        { label: 'State', value: statusLabel(version.state) },
        { label: 'Created', value: version.created_at }
      ]
    }
  ];

  const model = lineage.model_version;
  sections.push(
    model
      ? {
          link: 'model_version',
          title: `Registered model ${model.name} version ${model.version}`,
          rows: [idRow('Made by run', model.run_id)]
        }
      : {
          link: 'model_version',
          title: 'Registered model',
          rows: [],
          missing: missingReason(missing, 'model_version') ?? 'Not a registered model.'
        }
  );

  const run = lineage.mlflow_run;
  sections.push(
    run
      ? {
          link: 'mlflow_run',
          title: 'MLflow run',
          rows: runRows(run),
          cell: cellHead(run.cell_source) || undefined
        }
      : {
          link: 'mlflow_run',
          title: 'MLflow run',
          rows: [],
          missing: missingReason(missing, 'mlflow_run') ?? 'Not known.'
        }
  );

  const pipeline = lineage.pipeline_run;
  const scheduled = lineage.scheduler_run;
  if (pipeline) {
    const rows: ILineageRow[] = [
      { label: 'Pipeline', value: pipeline.pipeline_name },
      idRow('Run', pipeline.id),
      { label: 'Status', value: statusLabel(pipeline.status) }
    ];
    if (pipeline.step) {
      rows.push(
        { label: 'Step', value: pipeline.step.step, code: true },
        { label: 'Step status', value: statusLabel(pipeline.step.status) },
        idRow('Step run', pipeline.step.run_id)
      );
    }
    rows.push(
      ...parameterRows(pipeline.parameters).map(r => ({ ...r, label: `param ${r.label}` }))
    );
    sections.push({ link: 'pipeline_run', title: 'Pipeline run', rows });
  } else if (scheduled) {
    sections.push({
      link: 'scheduler_run',
      title: 'Scheduler run',
      rows: [
        idRow('Run', scheduled.id),
        { label: 'Job', value: scheduled.job_id, code: true },
        { label: 'Status', value: statusLabel(scheduled.status) }
      ]
    });
  } else {
    const reason =
      missingReason(missing, 'pipeline_run') ?? missingReason(missing, 'scheduler_run');
    sections.push({
      link: 'pipeline_run',
      title: 'Pipeline run',
      rows: [],
      missing: reason ?? 'Not run by the scheduler.'
    });
  }

  const notebook = lineage.notebook;
  sections.push(
    notebook
      ? {
          link: 'notebook',
          title: 'Notebook snapshot',
          rows: [
            ...(notebook.path ? [{ label: 'Path', value: notebook.path, code: true }] : []),
            digestRow('Digest', notebook.digest),
            ...parameterRows(notebook.parameters).map(r => ({ ...r, label: `param ${r.label}` }))
          ]
        }
      : {
          link: 'notebook',
          title: 'Notebook snapshot',
          rows: [],
          missing: missingReason(missing, 'notebook') ?? 'Not known.'
        }
  );

  const inputs = lineage.inputs ?? [];
  sections.push(
    inputs.length
      ? {
          link: 'inputs',
          title: `Input files (${inputs.length})`,
          rows: inputs.map(file => ({
            label: file.path,
            ...shortSha(file.sha256),
            code: true,
            title: `${file.sha256 ?? 'no SHA-256 recorded'} (${inputSource(file.source)})`
          }))
        }
      : {
          link: 'inputs',
          title: 'Input files',
          rows: [],
          missing: missingReason(missing, 'inputs') ?? 'None recorded.'
        }
  );
  return sections;
}

/** ``step:prepare/train.csv`` → ``left by step prepare``; ``trigger`` → ``started the run``. */
export function inputSource(source: string): string {
  if (source === 'trigger') {
    return 'a file that started the run';
  }
  const step = /^step:([^/]+)\//.exec(source);
  return step ? `left by step ${step[1]}` : source;
}

/** ``missing`` as lines ``link: reason`` (the link in words), for the dialog's last part. */
export function missingLines(lineage: Pick<ILineage, 'missing'>): string[] {
  return (lineage.missing ?? []).map(m => `${LINK_WORDS[m.link]}: ${m.reason}`);
}

const LINK_WORDS: Record<LineageLink, string> = {
  model_version: 'Registered model',
  mlflow_run: 'MLflow run',
  scheduler_run: 'Scheduler run',
  pipeline_run: 'Pipeline run',
  notebook: 'Notebook',
  inputs: 'Input files'
};
