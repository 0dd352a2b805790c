/**
 * Names the services accept, checked in the browser with the services' own rules.
 *
 * - Job names: hub_ext/services/scheduler/models.py (``SLUG_PATTERN``, at most 63);
 *   the default name of a notebook's job is ``%schedule``'s
 *   (server_ext/clients/scheduler/jobs.py ``default_job_name``, JupyterHub's ``safe_slug``), so
 *   the dialog and the magic name the same notebook's job the same way.
 * - Deployment names: hub_ext/services/deployer/models.py (``NAME_PATTERN``, no ``--``,
 *   not ending in ``-``).
 * - What ``%deploy`` deploys: server_ext/clients/deployer/publish.py (``describe_source``).
 *
 * No JupyterLab imports: unit-tested in src/__tests__/names.spec.ts.
 */
import { sha256 } from 'js-sha256';

export const MAX_JOB_NAME = 63;
export const MAX_DEPLOYMENT_NAME = 40;

const JOB_SLUG = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const PLAIN_SLUG = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const SIMPLE_NAME = /^[a-z][a-z0-9]*$/;
const DEPLOYMENT_NAME = /^[a-z0-9][a-z0-9-]{0,39}$/;
const PROFILE_SLUG = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const RUN_ID = /^[0-9a-f]{32}$/;
const REGISTRY_URI = /^models:\/([^/\s]+)\/([1-9][0-9]*)$/;
/** A Python identifier (``str.isidentifier``), closely enough for a kernel variable. */
const IDENTIFIER = /^[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]*$/u;
const PYTHON_KEYWORDS = new Set(
  (
    'False None True and as assert async await break class continue def del elif else ' +
    'except finally for from global if import in is lambda nonlocal not or pass raise ' +
    'return try while with yield'
  ).split(' ')
);

/** The file name of ``path`` without its last suffix (Python's ``PurePosixPath.stem``). */
export function pathStem(path: string): string {
  const name = path.split('/').filter(Boolean).pop() ?? '';
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
}

/** JupyterHub's ``_extract_safe_name``: lowercase letters, digits and single dashes. */
function extractSafeName(name: string, maxLength: number): string {
  const noAccents = name.normalize('NFKD').replace(/\p{Mn}/gu, '');
  let safe = noAccents.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  safe = safe.replace(/^-+/, '').slice(0, maxLength);
  if (safe && !/^[a-z]/.test(safe)) {
    safe = 'x-' + safe.slice(0, maxLength - 2);
  }
  safe = safe.replace(/-+$/, '');
  return safe || 'x';
}

/** JupyterHub's ``safe_slug``: ``name`` if simple, else its safe form and a short hash. */
export function safeSlug(name: string, maxLength = 30): string {
  if (!name) {
    throw new Error('Unable to create safe slug for empty string');
  }
  if (name.length <= maxLength && SIMPLE_NAME.test(name)) {
    return name;
  }
  const hash = sha256(name).slice(0, 8);
  return `${extractSafeName(name, maxLength - 9)}-${hash}`;
}

/**
 * The default job name of the notebook at ``path``, as ``%schedule`` makes it.
 *
 * A stem that already is a plain slug (``daily-report``, ``Sales`` → ``sales``) is kept;
 * any other becomes ``safe_slug`` of it with a hash (``My Report`` →
 * ``my-report-9110ab62``), so two such notebooks never share a job.
 */
export function defaultJobName(path: string): string {
  const stem = pathStem(path).toLowerCase();
  if (!stem) {
    return 'notebook';
  }
  if (stem.length <= MAX_JOB_NAME && PLAIN_SLUG.test(stem)) {
    return stem;
  }
  return safeSlug(stem, MAX_JOB_NAME);
}

/** The service's message for a job name it refuses, or null for a good one. */
export function checkJobName(name: string): string | null {
  if (!name || name.length > MAX_JOB_NAME || !JOB_SLUG.test(name)) {
    return (
      `job name '${name}' is not a valid name: use 1 to 63 lowercase letters, digits and ` +
      "dashes, starting and ending with a letter or digit (e.g. 'daily-report')"
    );
  }
  return null;
}

/** The deployer's message for a deployment name it refuses, or null for a good one. */
export function checkDeploymentName(name: string): string | null {
  if (!DEPLOYMENT_NAME.test(name) || name.includes('--') || name.endsWith('-')) {
    return (
      `'${name}' is not a deployment name: use 1 to 40 lowercase letters, digits and ` +
      'single dashes, starting with a letter or digit and not ending with a dash ' +
      "(for example 'churn-model')"
    );
  }
  return null;
}

/** A deployment name made from the notebook at ``path`` (a suggestion; may be edited). */
export function defaultDeploymentName(path: string): string {
  const safe = pathStem(path)
    .normalize('NFKD')
    .replace(/\p{Mn}/gu, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, MAX_DEPLOYMENT_NAME)
    .replace(/-+$/, '');
  return safe || 'model';
}

/** The message for a profile that is not a slug, or null (an empty one means the default). */
export function checkProfileSlug(slug: string): string | null {
  if (slug && (slug.length > 63 || !PROFILE_SLUG.test(slug))) {
    return `'${slug}' is not a profile slug: choose one of the listed profiles`;
  }
  return null;
}

/** Whether ``text`` is a Python identifier (and not a keyword). */
export function isPythonIdentifier(text: string): boolean {
  return IDENTIFIER.test(text) && !PYTHON_KEYWORDS.has(text);
}

/** What kind of model reference ``%deploy`` is given. */
export type ModelRefKind = 'variable' | 'run' | 'registry';

/**
 * What ``%deploy MODEL`` would take ``ref`` for, or the message saying which forms there
 * are. Whether a variable exists is the kernel's to say (the magic does).
 */
export function classifyModelRef(ref: string): { kind: ModelRefKind } | { error: string } {
  if (!ref) {
    return {
      error:
        'Say what to deploy: a variable holding a fitted model (e.g. model), an MLflow run ' +
        'id (32 hex digits) or models:/NAME/VERSION.'
    };
  }
  if (RUN_ID.test(ref)) {
    return { kind: 'run' };
  }
  if (ref.startsWith('models:/')) {
    return REGISTRY_URI.test(ref)
      ? { kind: 'registry' }
      : {
          error: `'${ref}' is not a registered model version: write models:/NAME/VERSION, e.g. models:/alice-churn/3.`
        };
  }
  if (isPythonIdentifier(ref)) {
    return { kind: 'variable' };
  }
  return {
    error:
      `'${ref}' is neither a variable name, an MLflow run id (32 hex digits) nor ` +
      'models:/NAME/VERSION.'
  };
}
