/**
 * The Lineage dialog's content (./lineage.tsx loads it): a plain React view of
 * ``logic/lineage.ts``'s sections, one block per link of the chain with an arrow between,
 * then the links the deployer could not resolve and why. Kept apart from the dialog so it
 * renders without JupyterLab (the views' tests).
 */
import * as React from 'react';

import type { ILineage } from '../api/types';
import { ILineageSection, lineageSections, missingLines } from '../logic/lineage';

function Section(props: { section: ILineageSection }): React.ReactElement {
  const { section } = props;
  return (
    <section
      className="shipyard-lineage-link"
      data-link={section.link}
      data-missing={section.missing ? 'true' : 'false'}
    >
      <h3 className="shipyard-lineage-title">{section.title}</h3>
      {section.missing ? <div className="shipyard-muted">{section.missing}</div> : null}
      {section.rows.length ? (
        <table className="shipyard-lineage-rows">
          <tbody>
            {section.rows.map((row, i) => (
              <tr key={`${row.label}:${i}`}>
                <th scope="row">{row.label}</th>
                <td title={row.title}>{row.code ? <code>{row.value}</code> : row.value}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {section.cell ? <pre className="shipyard-lineage-cell">{section.cell}</pre> : null}
    </section>
  );
}

/** The chain, once loaded. */
export function LineageView(props: { lineage: ILineage }): React.ReactElement {
  const missing = missingLines(props.lineage);
  return (
    <div className="shipyard-lineage">
      {lineageSections(props.lineage).map((section, i) => (
        <React.Fragment key={section.link}>
          {i ? (
            <div className="shipyard-lineage-arrow" aria-hidden="true">
              ↓
            </div>
          ) : null}
          <Section section={section} />
        </React.Fragment>
      ))}
      {missing.length ? (
        <section className="shipyard-lineage-missing" data-link="missing">
          <h3 className="shipyard-lineage-title">Not resolved</h3>
          <ul>
            {missing.map(line => (
              <li key={line}>{line}</li>
            ))}
          </ul>
        </section>
      ) : null}
    </div>
  );
}
