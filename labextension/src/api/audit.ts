/**
 * The audit service, through the server extension's forwarding routes
 * (server_ext/handlers/audit.py ``ROUTES``, under /shipyard/api/audit/). The service
 * answers hub admins only; anyone else gets its 403 as a ``ShipyardAPIError``.
 */
import { ServerConnection } from '@jupyterlab/services';

import { queryString, requestAPI } from './request';
import type { IAuditQuery, IAuditRecords, IAuditVerify } from './types';

const BASE = 'audit';

/** One typed client for the audit routes the panel uses. */
export class AuditService {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** A page of records matching ``query``, newest first. */
  records(query: IAuditQuery = {}): Promise<IAuditRecords> {
    return requestAPI<IAuditRecords>(
      `${BASE}/records${queryString({ ...query })}`,
      {},
      this.settings
    );
  }

  /** Check the whole trail's hash chain, in the file and the table. */
  verify(): Promise<IAuditVerify> {
    return requestAPI<IAuditVerify>(`${BASE}/verify`, {}, this.settings);
  }
}
