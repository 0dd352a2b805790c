/**
 * What the "Schedule pipeline" dialog (./schedulePipeline.tsx) shows: the pipeline the
 * scheduler made of the file, or its refusal. Plain React, kept apart from the dialog so it
 * renders without JupyterLab (the views' tests).
 */
import * as React from 'react';

import type { IPipeline } from '../api/types';
import { scheduledPipeline } from '../logic/pipelineFile';
import { messageLines } from '../logic/pipelines';

/** The scheduler's answer for ``path``, as the dialog shows it. */
export function ScheduledPipelineView(props: {
  pipeline: IPipeline;
  updated: boolean;
  path: string;
}): React.ReactElement {
  const result = scheduledPipeline(props.pipeline, props.updated);
  return (
    <div className="shipyard-schedule-pipeline" data-shipyard-pipeline={props.pipeline.name}>
      <div className="shipyard-muted">
        From <code>{props.path}</code>
      </div>
      <h3 className="shipyard-lineage-title">Steps, in run order</h3>
      <ul className="shipyard-schedule-pipeline-steps">
        {result.steps.map(line => (
          <li key={line}>
            <code>{line}</code>
          </li>
        ))}
      </ul>
      <h3 className="shipyard-lineage-title">Triggers</h3>
      {result.triggers.length ? (
        <ul className="shipyard-schedule-pipeline-triggers">
          {result.triggers.map(line => (
            <li key={line}>{line}</li>
          ))}
        </ul>
      ) : null}
      <p>{result.note}</p>
    </div>
  );
}

/** The refusal's lines (each file:line:column error of the file on its own). */
export function PipelineRefusalView(props: { message: string }): React.ReactElement {
  return (
    <ul className="shipyard-error shipyard-pipeline-errors" role="alert">
      {messageLines(props.message).map((line, i) => (
        <li key={i}>
          <code>{line}</code>
        </li>
      ))}
    </ul>
  );
}
