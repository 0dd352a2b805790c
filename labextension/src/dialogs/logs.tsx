/**
 * A run's log in a dialog, following it while the run runs.
 *
 * Reads ``GET runs/<id>/log?offset=N`` and asks again from ``next_offset``: at once while
 * the service has more, every second while the run is active, and not at all once a
 * chunk says ``complete``. Closing the dialog stops it.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { errorMessage } from '../api/request';
import type { SchedulerService } from '../api/scheduler';
import type { IJob, IRun } from '../api/types';
import { statusLabel } from '../logic/format';
import { appendLog, EMPTY_LOG, ILogState, runProgress } from '../logic/state';

const POLL_MS = 1000;

class LogView extends ReactWidget {
  constructor(
    private readonly scheduler: SchedulerService,
    private readonly run: Pick<IRun, 'id' | 'status'>
  ) {
    super();
    this.addClass('shipyard-log-dialog');
    void this._follow();
  }

  dispose(): void {
    this._stopped = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    super.dispose();
  }

  render(): React.ReactElement {
    const log = this._log;
    const progress = runProgress({
      status: log.status ?? this.run.status,
      cells_done: log.cells_done,
      cells_total: log.cells_total
    });
    return (
      <div className="shipyard-log-view" data-run-id={this.run.id}>
        <div className="shipyard-log-status">
          <span className="shipyard-status" data-status={log.status ?? this.run.status}>
            {statusLabel(log.status ?? this.run.status)}
          </span>
          {progress ? (
            <>
              {' '}
              <progress
                className="shipyard-progress"
                max={progress.total}
                value={progress.done}
              />{' '}
              {progress.done}/{progress.total} cells
            </>
          ) : null}
          {!log.complete && !this._error ? (
            <span className="shipyard-muted"> · following…</span>
          ) : null}
        </div>
        {this._error ? (
          <div className="shipyard-error" role="alert">
            {this._error}
          </div>
        ) : null}
        <pre className="shipyard-log" data-complete={log.complete ? 'true' : 'false'}>
          {log.text || (log.complete ? '(the log is empty)' : '')}
        </pre>
      </div>
    );
  }

  private async _follow(): Promise<void> {
    while (!this._stopped) {
      const asked = this._log.offset;
      try {
        const chunk = await this.scheduler.runLog(this.run.id, asked);
        if (this._stopped) {
          return;
        }
        this._error = null;
        this._log = appendLog(this._log, chunk);
        this.update();
        this._scrollToEnd();
        if (this._log.complete) {
          return;
        }
        if (chunk.next_offset > asked && chunk.text) {
          continue; // more may be waiting: ask at once
        }
      } catch (error) {
        if (this._stopped) {
          return;
        }
        this._error = errorMessage(error);
        this.update();
        if (this._log.status && !['queued', 'running'].includes(this._log.status)) {
          return;
        }
      }
      await new Promise<void>(resolve => {
        this._timer = window.setTimeout(resolve, POLL_MS);
      });
      this._timer = null;
    }
  }

  private _scrollToEnd(): void {
    const pre = this.node.querySelector('pre.shipyard-log');
    if (pre) {
      requestAnimationFrame(() => {
        pre.scrollTop = pre.scrollHeight;
      });
    }
  }

  private _log: ILogState = EMPTY_LOG;
  private _error: string | null = null;
  private _stopped = false;
  private _timer: number | null = null;
}

/**
 * Show ``run``'s log until the user closes the dialog (a job's run, or a pipeline step's:
 * ``job`` names what the title says it is the log of).
 */
export async function showRunLog(
  scheduler: SchedulerService,
  run: Pick<IRun, 'id' | 'status'>,
  job: Pick<IJob, 'name'>
): Promise<void> {
  const body = new LogView(scheduler, run);
  await showDialog({
    title: `Log of ${job.name}, run ${run.id.slice(0, 8)}`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
  body.dispose();
}
