/**
 * The scheduler, through the server extension's forwarding routes
 * (server_ext/handlers/scheduler.py ``ROUTES``, under /shipyard/api/scheduler/).
 */
import { ServerConnection } from '@jupyterlab/services';

import { dispositionFilename, queryString, requestAPI, requestResponse, segment } from './request';
import type {
  ICreateJob,
  ICreateRun,
  IJob,
  IListJobs,
  IListRuns,
  ILogChunk,
  IProfiles,
  IRun,
  ISchedulerProfile,
  IUpdateJob,
  IUpdateJobResponse
} from './types';
import type { JSONValue } from '../logic/parameters';

const BASE = 'scheduler';

/** One typed client for the scheduler's routes the panel and the dialogs use. */
export class SchedulerService {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The profiles the user may run jobs in (``default`` marks the hub's default). */
  async profiles(): Promise<ISchedulerProfile[]> {
    const answer = await requestAPI<IProfiles>(`${BASE}/profiles`, {}, this.settings);
    return answer.profiles;
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
}
