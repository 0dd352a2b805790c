/**
 * The scheduler, through the server extension's forwarding routes
 * (server_ext/handlers/scheduler.py ``ROUTES``, under /shipyard/api/scheduler/).
 */
import { ServerConnection } from '@jupyterlab/services';

import { dispositionFilename, queryString, requestAPI, requestResponse, segment } from './request';
import type {
  ICreateJob,
  ICreateRun,
  ICronPreview,
  ICronPreviewRequest,
  IJob,
  IListJobs,
  IListPipelineRuns,
  IListPipelines,
  IListRuns,
  ILogChunk,
  INotebookContent,
  IParametersPreview,
  IPausePipeline,
  IPipeline,
  IPipelineRun,
  IProfiles,
  IRun,
  ISchedulerProfile,
  IUpdateJob,
  IUpdateJobResponse,
  JSONValue
} from './types';

const BASE = 'scheduler';

/** One typed client for the scheduler's routes the panel and the dialogs use. */
export class SchedulerService {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The profiles the user may run jobs in (``default`` marks the hub's default). */
  async profiles(): Promise<ISchedulerProfile[]> {
    const answer = await requestAPI<IProfiles>(`${BASE}/profiles`, {}, this.settings);
    return answer.profiles;
  }

  /**
   * The next runs of a cron expression in a time zone, as the scheduler will fire them;
   * a bad expression or zone rejects with the service's message (a 400).
   */
  previewCron(body: ICronPreviewRequest, init: RequestInit = {}): Promise<ICronPreview> {
    return requestAPI<ICronPreview>(
      `${BASE}/previews/cron`,
      { ...init, method: 'POST', body: JSON.stringify(body) },
      this.settings
    );
  }

  /**
   * The notebook's parameters as papermill's inspector sees them, and the text typed for
   * some of them read as the scheduler reads a job's (each a value or an error).
   */
  previewParameters(
    notebook: INotebookContent,
    values: Record<string, string> = {},
    init: RequestInit = {}
  ): Promise<IParametersPreview> {
    return requestAPI<IParametersPreview>(
      `${BASE}/previews/parameters`,
      { ...init, method: 'POST', body: JSON.stringify({ notebook, values }) },
      this.settings
    );
  }

  /** Every job the user sees (their own and those shared with their groups), all pages. */
  async listJobs(): Promise<IJob[]> {
    const jobs: IJob[] = [];
    let token: string | null = null;
    for (let page = 0; page < 50; page++) {
      const answer: IListJobs = await requestAPI<IListJobs>(
        `${BASE}/jobs${queryString({ limit: 200, next_token: token })}`,
        {},
        this.settings
      );
      jobs.push(...answer.jobs);
      token = answer.next_token;
      if (!token) {
        break;
      }
    }
    return jobs;
  }

  /** Create a job; the service answers 201 with it (4xx with a message otherwise). */
  createJob(body: ICreateJob): Promise<IJob> {
    return requestAPI<IJob>(
      `${BASE}/jobs`,
      { method: 'POST', body: JSON.stringify(body) },
      this.settings
    );
  }

  /** Change some of a job's fields (``{"paused": true}`` pauses it). */
  async updateJob(jobId: string, changes: IUpdateJob): Promise<IJob> {
    const answer = await requestAPI<IUpdateJobResponse>(
      `${BASE}/jobs/${segment(jobId)}`,
      { method: 'PATCH', body: JSON.stringify(changes) },
      this.settings
    );
    return answer.job;
  }

  /** Queue a run now; ``parameters`` override the job's for this run only. */
  runNow(jobId: string, parameters: Record<string, JSONValue> = {}): Promise<IRun> {
    const body: ICreateRun = { parameters };
    return requestAPI<IRun>(
      `${BASE}/jobs/${segment(jobId)}/runs`,
      { method: 'POST', body: JSON.stringify(body) },
      this.settings
    );
  }

  /** Runs, newest first (of one job with ``jobId``). */
  async listRuns(query: { jobId?: string; limit?: number } = {}): Promise<IRun[]> {
    const path = query.jobId ? `${BASE}/jobs/${segment(query.jobId)}/runs` : `${BASE}/runs`;
    const answer = await requestAPI<IListRuns>(
      `${path}${queryString({ limit: query.limit ?? 50 })}`,
      {},
      this.settings
    );
    return answer.runs;
  }

  /** One run. */
  getRun(runId: string): Promise<IRun> {
    return requestAPI<IRun>(`${BASE}/runs/${segment(runId)}`, {}, this.settings);
  }

  /** The run's log from byte ``offset``; ask again from ``next_offset`` until ``complete``. */
  runLog(runId: string, offset = 0): Promise<ILogChunk> {
    return requestAPI<ILogChunk>(
      `${BASE}/runs/${segment(runId)}/log${queryString({ offset })}`,
      {},
      this.settings
    );
  }

  /** The URL of a run's output notebook (for a link's ``href``). */
  outputUrl(runId: string): string {
    return `${this.settings.baseUrl.replace(/\/$/, '')}/shipyard/api/${BASE}/runs/${segment(runId)}/output`;
  }

  /** The run's executed notebook, and the file name the service gives it. */
  async runOutput(runId: string): Promise<{ blob: Blob; filename: string }> {
    const response = await requestResponse(
      `${BASE}/runs/${segment(runId)}/output`,
      {},
      this.settings
    );
    return {
      blob: await response.blob(),
      filename: dispositionFilename(
        response.headers.get('Content-Disposition'),
        `run-${runId}.ipynb`
      )
    };
  }

  // ------------------------------------------------------------ pipelines

  /** The user's pipelines. */
  async listPipelines(): Promise<IPipeline[]> {
    const answer = await requestAPI<IListPipelines>(`${BASE}/pipelines`, {}, this.settings);
    return answer.pipelines;
  }

  /**
   * Add the pipeline described by ``path`` (a pipeline.yaml relative to the user's home); a
   * bad file rejects with the service's 400, whose message lists every file:line error.
   */
  createPipeline(path: string): Promise<IPipeline> {
    return requestAPI<IPipeline>(
      `${BASE}/pipelines`,
      { method: 'POST', body: JSON.stringify({ path }) },
      this.settings
    );
  }

  /**
   * Read the pipeline's file again, from ``path`` (relative to the user's home) when given;
   * runs already started keep the definition they started with.
   */
  updatePipeline(pipelineId: string, path?: string): Promise<IPipeline> {
    return requestAPI<IPipeline>(
      `${BASE}/pipelines/${segment(pipelineId)}`,
      { method: 'PUT', body: JSON.stringify(path === undefined ? {} : { path }) },
      this.settings
    );
  }

  /**
   * Pause the pipeline (its triggers start no run; Run still does) or resume it; the service
   * answers with the pipeline as it is now.
   */
  setPipelinePaused(pipelineId: string, paused: boolean): Promise<IPipeline> {
    const body: IPausePipeline = { paused };
    return requestAPI<IPipeline>(
      `${BASE}/pipelines/${segment(pipelineId)}`,
      { method: 'PATCH', body: JSON.stringify(body) },
      this.settings
    );
  }

  /** Start a run of the pipeline now; ``parameters`` over the file's defaults. */
  runPipeline(
    pipelineId: string,
    parameters: Record<string, JSONValue> = {}
  ): Promise<IPipelineRun> {
    return requestAPI<IPipelineRun>(
      `${BASE}/pipelines/${segment(pipelineId)}/runs`,
      { method: 'POST', body: JSON.stringify({ parameters }) },
      this.settings
    );
  }

  /** The pipeline's runs, newest first. */
  async listPipelineRuns(pipelineId: string): Promise<IPipelineRun[]> {
    const answer = await requestAPI<IListPipelineRuns>(
      `${BASE}/pipelines/${segment(pipelineId)}/runs`,
      {},
      this.settings
    );
    return answer.runs;
  }

  /** One pipeline run, with every step's state. */
  getPipelineRun(runId: string): Promise<IPipelineRun> {
    return requestAPI<IPipelineRun>(`${BASE}/pipeline-runs/${segment(runId)}`, {}, this.settings);
  }

  /** Cancel a running pipeline run: its running steps are stopped, the pending ones never start. */
  cancelPipelineRun(runId: string): Promise<IPipelineRun> {
    return requestAPI<IPipelineRun>(
      `${BASE}/pipeline-runs/${segment(runId)}`,
      { method: 'PATCH', body: JSON.stringify({ status: 'cancelled' }) },
      this.settings
    );
  }

  /** A new run that reruns the failed or cancelled steps and those after them. */
  repairPipelineRun(runId: string): Promise<IPipelineRun> {
    return requestAPI<IPipelineRun>(
      `${BASE}/pipeline-runs/${segment(runId)}/repair`,
      { method: 'POST' },
      this.settings
    );
  }
}
