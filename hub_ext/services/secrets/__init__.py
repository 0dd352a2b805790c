"""The ``secrets`` hub service: users' named secrets for their jobs and models.

A user keeps named secrets (``DB_PASSWORD``, ``API_KEY``) here; a job or a
deployment names the secrets it needs, and the scheduler or the deployer
resolves their values for one run or replica at a time (``POST api/resolve``,
which only those services may call). Values are never answered to users,
never logged and never put in an audit record.

Where values are kept is a backend (:mod:`.backend`): the database, encrypted
with Fernet under a key file that is not in the database (:mod:`.database`),
or Kubernetes Secrets (:mod:`.kubernetes`).
"""
