/**
 * The Schedule… dialog's pipeline choice: which pipeline files of the notebook's folder it
 * offers, and the cron trigger it writes into the chosen one. Pure: the dialog
 * (../dialogs/schedule.tsx) reads and writes the files and asks the scheduler.
 *
 * The pipeline file stays the one definition of the pipeline: the dialog writes its cron
 * trigger into the file's ``triggers`` (replacing the cron triggers there, keeping the
 * others and every other line as written), then hands the file to the scheduler as
 * "Schedule pipeline" in the file browser does. Reading the file again later (Schedule
 * pipeline, ``PUT api/pipelines/<id>``, ``%pipeline create``) keeps the schedule.
 *
 * The reading here is a line scan, not a YAML parser: it only finds the file's name, which
 * step runs the notebook and where ``triggers`` is, to word the choice and place the line.
 * The scheduler judges the file it is given; what the scan cannot place (a ``triggers``
 * written as a non-empty flow list) is refused with what to do instead.
 */
import { isPipelineFile } from './pipelineFile';

/** A pipeline file the dialog offers to schedule instead of the notebook. */
export interface IPipelineChoice {
  /** The file, relative to the home. */
  path: string;
  /** The file's ``name`` (null when the scan finds none). */
  name: string | null;
  /** The step that runs the notebook being scheduled (null: none does). */
  step: string | null;
}

/** The folder of a home-relative path ('' for the home itself). */
export function folderOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

/** A YAML scalar as written, without its quotes and trailing comment. */
function scalar(text: string): string {
  const value = text.replace(/\s+#.*$/, '').trim();
  const quoted = /^(["'])(.*)\1$/.exec(value);
  return quoted ? quoted[2] : value;
}

/** The top-level ``name`` of a pipeline file's text, or null. */
export function pipelineName(text: string): string | null {
  for (const line of text.split(/\r?\n/)) {
    const match = /^name\s*:\s*(\S.*)$/.exec(line);
    if (match) {
      return scalar(match[1]) || null;
    }
  }
  return null;
}

/**
 * The id of the step of ``text`` (a pipeline file in ``folder``) whose ``notebook`` is
 * ``notebookPath`` (home-relative), or null.
 */
export function stepOfNotebook(text: string, folder: string, notebookPath: string): string | null {
  const relative = folder ? notebookPath.slice(folder.length + 1) : notebookPath;
  if (folder && !notebookPath.startsWith(`${folder}/`)) {
    return null;
  }
  const lines = text.split(/\r?\n/);
  const start = lines.findIndex(l => /^steps\s*:\s*(#.*)?$/.test(l));
  if (start < 0) {
    return null;
  }
  let indent: number | null = null;
  let current: string | null = null;
  for (const line of lines.slice(start + 1)) {
    if (!line.trim() || /^\s*#/.test(line)) {
      continue;
    }
    const depth = line.length - line.trimStart().length;
    if (depth === 0) {
      break; // the next top-level key
    }
    indent ??= depth;
    if (depth === indent) {
      const key = /^\s*([A-Za-z0-9][A-Za-z0-9_-]*)\s*:/.exec(line);
      current = key ? key[1] : null;
    }
    const notebook = /(?:^|[{,\s])notebook\s*:\s*("[^"]*"|'[^']*'|[^,}#\s]+)/.exec(line);
    if (current && notebook && normalise(scalar(notebook[1])) === normalise(relative)) {
      return current;
    }
  }
  return null;
}

function normalise(path: string): string {
  return path.replace(/^\.\//, '');
}

/**
 * The choices for the notebook at ``notebookPath``: the pipeline files among ``files``
 * (home-relative path and text), those with a step running the notebook first.
 */
export function pipelineChoices(
  notebookPath: string,
  files: readonly { path: string; text: string }[]
): IPipelineChoice[] {
  const choices = files
    .filter(f => isPipelineFile(f.path.slice(f.path.lastIndexOf('/') + 1)))
    .map(f => ({
      path: f.path,
      name: pipelineName(f.text),
      step: stepOfNotebook(f.text, folderOf(f.path), notebookPath)
    }));
  return choices.sort(
    (a, b) => Number(b.step !== null) - Number(a.step !== null) || a.path.localeCompare(b.path)
  );
}

/**
 * How the dialog's choice reads, short enough for its select: ``The pipeline churn (its
 * step train)``, or with the file's path when no step runs the notebook.
 */
export function choiceLabel(choice: IPipelineChoice): string {
  const name = choice.name ?? choice.path;
  if (choice.step) {
    return `The pipeline ${name} (its step ${choice.step})`;
  }
  return choice.name ? `The pipeline ${name} (${choice.path})` : `The pipeline ${name}`;
}

/** The trigger line the dialog writes (JSON strings are YAML double-quoted scalars). */
export function cronTriggerItem(expression: string, timezone: string): string {
  return `{kind: cron, expression: ${JSON.stringify(expression.trim())}, timezone: ${JSON.stringify(timezone.trim())}}`;
}

/** Whether a block list item (its lines) is a cron trigger. */
function isCronItem(lines: readonly string[]): boolean {
  return lines.some(l => /(?:^|[{,\s-])kind\s*:\s*["']?cron["']?\s*(?:[,}#]|$)/.test(l));
}

/**
 * ``text`` with a cron trigger at ``expression`` in ``timezone``: the file's cron triggers
 * are replaced by it, its other triggers and lines kept as written.
 */
export function withCronTrigger(
  text: string,
  expression: string,
  timezone: string
): { ok: true; text: string } | { ok: false; error: string } {
  const newline = text.includes('\r\n') ? '\r\n' : '\n';
  const lines = text.split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === '') {
    lines.pop();
  }
  const item = cronTriggerItem(expression, timezone);
  const at = lines.findIndex(l => /^triggers\s*:/.test(l));
  if (at < 0) {
    lines.push('triggers:', `  - ${item}`);
    return { ok: true, text: lines.join(newline) + newline };
  }
  const rest = lines[at].replace(/^triggers\s*:/, '');
  const value = rest.replace(/\s+#.*$/, '').trim();
  if (value === '[]' || value === '~' || value === 'null') {
    lines.splice(at, 1, 'triggers:', `  - ${item}`);
    return { ok: true, text: lines.join(newline) + newline };
  }
  if (value !== '') {
    return {
      ok: false,
      error:
        `The triggers of this file are written on one line (${value}): write them as a list, ` +
        'one "- {kind: …}" a line, to have the dialog set the schedule, or add the cron ' +
        'trigger there yourself.'
    };
  }
  // the block list under triggers: its items, each from its "- " line to the next
  let end = at + 1;
  let indent: string | null = null;
  const items: { start: number; end: number }[] = [];
  while (end < lines.length) {
    const line = lines[end];
    if (line.trim() && !/^[\s#-]/.test(line)) {
      break; // the next top-level key
    }
    const dash = /^(\s*)- /.exec(line) ?? /^(\s*)-$/.exec(line);
    if (dash && (indent === null || dash[1] === indent)) {
      indent ??= dash[1];
      items.push({ start: end, end: end + 1 });
    } else if (items.length && line.trim()) {
      items[items.length - 1].end = end + 1;
    }
    end++;
  }
  const kept: string[] = [];
  let cursor = at + 1;
  for (const entry of items) {
    kept.push(...lines.slice(cursor, entry.start));
    if (!isCronItem(lines.slice(entry.start, entry.end))) {
      kept.push(...lines.slice(entry.start, entry.end));
    }
    cursor = entry.end;
  }
  kept.push(...lines.slice(cursor, end));
  const prefix = indent ?? '  ';
  const result = [...lines.slice(0, at + 1), `${prefix}- ${item}`, ...kept, ...lines.slice(end)];
  return { ok: true, text: result.join(newline) + newline };
}
