/**
 * Small inline SVG charts, no chart library: a deployment's recent latency and request
 * rate (the samples the panel polled, see ``pushSample``), and a usage metric a day
 * (:func:`UsageChart`, laid out by ``barLayout``).
 */
import * as React from 'react';

import type { IUsageRow } from '../api/types';
import { formatLatency, formatRate } from '../logic/format';
import { ISample, sparklinePath } from '../logic/state';
import { barLayout, dayLabel, formatUsage, USAGE_METRICS, UsageMetric } from '../logic/usage';

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

const DAY_WIDTH = 300;
const DAY_HEIGHT = 60;

/**
 * A bar a day of one usage metric over the section's period (``days``: the service's
 * ``by=day`` rows, oldest first), with the first and last day under it. Each bar has a
 * ``<title>`` (its day and amount) for a pointer's tooltip.
 */
export function UsageChart(props: {
  days: readonly IUsageRow[];
  metric: UsageMetric;
  currency: string;
}): React.ReactElement {
  const { days, metric, currency } = props;
  const label = USAGE_METRICS.find(m => m.key === metric)?.label ?? metric;
  const values = days.map(d => d[metric]);
  const bars = barLayout(values, DAY_WIDTH, DAY_HEIGHT);
  const top = Math.max(0, ...values);
  const first = days[0]?.key ?? '';
  const last = days[days.length - 1]?.key ?? '';
  return (
    <figure className="shipyard-chart shipyard-usage-chart" data-metric={metric}>
      <svg
        viewBox={`0 0 ${DAY_WIDTH} ${DAY_HEIGHT}`}
        width="100%"
        height={DAY_HEIGHT}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${label} a day from ${first} to ${last}`}
      >
        <line
          className="shipyard-usage-axis"
          x1={0}
          x2={DAY_WIDTH}
          y1={DAY_HEIGHT - 0.5}
          y2={DAY_HEIGHT - 0.5}
          vectorEffect="non-scaling-stroke"
        />
        {bars.map((bar, i) => (
          <rect
            key={days[i].key}
            className="shipyard-usage-bar"
            data-day={days[i].key}
            x={bar.x}
            y={bar.y}
            width={bar.width}
            height={bar.height}
          >
            <title>{`${dayLabel(days[i].key)}: ${formatUsage(metric, bar.value, currency)}`}</title>
          </rect>
        ))}
      </svg>
      <figcaption>
        <span>{dayLabel(first)}</span>
        <span className="shipyard-legend-span">
          {top > 0 ? `max ${formatUsage(metric, top, currency)} a day` : `no ${label} yet`}
        </span>
        <span>{dayLabel(last)}</span>
      </figcaption>
    </figure>
  );
}
