/**
 * A deployment version's lineage in a dialog: GET deployer/deployments/<name>/versions/<v>/lineage
 * through the server extension (which forwards it with the user's token, so the deployer
 * reads the tracking service and the scheduler as this user), shown as
 * ``logic/lineage.ts`` lays it out: one block per link, then what is missing and why.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { DeployerService } from '../api/deployer';
import { errorMessage } from '../api/request';
import type { ILineage } from '../api/types';
import { LineageView } from './lineageView';

class LineageBody extends ReactWidget {
  constructor(
    private readonly deployer: DeployerService,
    private readonly name: string,
    private readonly version: number
  ) {
    super();
    this.addClass('shipyard-lineage-dialog');
    void this._load();
  }

  render(): React.ReactElement {
    if (this._error) {
      return (
        <div className="shipyard-error" role="alert">
          {this._error}
        </div>
      );
    }
    if (!this._lineage) {
      return <div className="shipyard-muted">Loading the lineage…</div>;
    }
    return <LineageView lineage={this._lineage} />;
  }

  private async _load(): Promise<void> {
    try {
      this._lineage = await this.deployer.lineage(this.name, this.version);
    } catch (error) {
      this._error = `Could not read the lineage of ${this.name} v${this.version}: ${errorMessage(error)}`;
    }
    if (!this.isDisposed) {
      this.update();
    }
  }

  private _lineage: ILineage | null = null;
  private _error: string | null = null;
}

/** Show the lineage of version ``version`` of deployment ``name`` until the user closes it. */
export async function showLineage(
  deployer: DeployerService,
  name: string,
  version: number
): Promise<void> {
  const body = new LineageBody(deployer, name, version);
  await showDialog({
    title: `Lineage of ${name} v${version}`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
  body.dispose();
}
