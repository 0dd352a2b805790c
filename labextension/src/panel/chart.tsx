/**
 * A small inline SVG chart of a deployment's recent latency and request rate: the
 * samples the panel polled (see ``pushSample``), no chart library.
 */
import * as React from 'react';

import { formatLatency, formatRate } from '../logic/format';
import { ISample, sparklinePath } from '../logic/state';

const WIDTH = 240;
const HEIGHT = 40;

export function MetricsChart(props: { samples: readonly ISample[] }): React.ReactElement {
  const { samples } = props;
  if (samples.length < 2) {
    return (
      <div className="shipyard-chart shipyard-chart-empty">
        The chart fills in as the panel polls (every 5 s).
      </div>
    );
  }
  const p50 = samples.map(s => s.p50);
  const p99 = samples.map(s => s.p99);
  const rate = samples.map(s => s.rate);
  const latencyMax = Math.max(
    0,
    ...p99.filter((v): v is number => v !== null),
    ...p50.filter((v): v is number => v !== null)
  );
  const rateMax = Math.max(0, ...rate);
  const last = samples[samples.length - 1];
  const seconds = Math.round((last.t - samples[0].t) / 1000);
  return (
    <figure className="shipyard-chart">
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        width="100%"
        height={HEIGHT}
        preserveAspectRatio="none"
        role="img"
        aria-label={`Latency and request rate over the last ${seconds} seconds`}
      >
        <path
          className="shipyard-chart-rate"
          d={sparklinePath(rate, WIDTH, HEIGHT - 2, rateMax || 1)}
          vectorEffect="non-scaling-stroke"
        />
        <path
          className="shipyard-chart-p99"
          d={sparklinePath(p99, WIDTH, HEIGHT - 2, latencyMax || 1)}
          vectorEffect="non-scaling-stroke"
        />
        <path
          className="shipyard-chart-p50"
          d={sparklinePath(p50, WIDTH, HEIGHT - 2, latencyMax || 1)}
          vectorEffect="non-scaling-stroke"
        />
      </svg>
      <figcaption>
        <span className="shipyard-legend shipyard-legend-p50">p50 {formatLatency(last.p50)}</span>
        <span className="shipyard-legend shipyard-legend-p99">p99 {formatLatency(last.p99)}</span>
        <span className="shipyard-legend shipyard-legend-rate">{formatRate(last.rate)}</span>
        <span className="shipyard-legend-span">last {seconds} s</span>
      </figcaption>
    </figure>
  );
}
