"""The audited actions, as data: one name per action, with what it records.

The names are fixed by issue 12 (point 3) and shared by every component that
calls :func:`hub_ext.audit.emit`, plus two the issue's list lacked for
state changes the services offer (``run.cancel``, ``deployment.grant``); the JSON schema only checks their form
("<object type>.<verb>"), so that a record of an action added later is never
lost to validation. The completeness test (tests/test_audit_trail.py) and
``shipyard audit list --action`` use this table.
"""

from __future__ import annotations

ACTIONS: dict[str, str] = {
    "login.succeeded": "a user logged in",
    "login.failed": "a login was refused (reason says why)",
    "login.locked_out": "a user was locked out after repeated failures",
    "user.create": "a hub user was created",
    "user.update": "a hub user was changed (admin flag, name)",
    "user.delete": "a hub user was deleted",
    "user.approve": "an admin approved a sign-up",
    "user.password_change": "a user's password was changed",
    "group.create": "a hub group was created",
    "group.update": "a hub group's properties were changed",
    "group.delete": "a hub group was deleted",
    "group.members_add": "users were added to a group",
    "group.members_remove": "users were removed from a group",
    "role.change": "a role or its assignment changed",
    "token.create": "an API token was issued",
    "token.delete": "an API token was revoked",
    "server.start": "a user's server was started (details: profile)",
    "server.stop": "a user's server was stopped",
    "profiles.change": "the profiles file changed (details: old and new digest)",
    "job.create": "a scheduled job was created",
    "job.update": "a scheduled job was changed",
    "job.pause": "a scheduled job was paused",
    "job.resume": "a scheduled job was resumed",
    "job.delete": "a scheduled job was deleted",
    "job.run": "a run of a job was started",
    "pipeline.create": "a pipeline was created from its file",
    "pipeline.update": "a pipeline was read again from its file",
    "pipeline.delete": "a pipeline was deleted",
    "pipeline.pause": "a pipeline's triggers were paused",
    "pipeline.resume": "a pipeline's triggers were resumed",
    "pipeline.run": "a run of a pipeline was started",
    "pipeline.repair": "a pipeline run was repaired (its failed steps run again)",
    "pipeline.cancel": "a pipeline run was cancelled",
    "pipeline.deploy_gate": "a pipeline's deploy step passed or refused a model, with both figures",
    "run.output_download": "a run's output was downloaded",
    "run.cancel": "a run was cancelled",
    "deployment.create": "a model deployment was created",
    "deployment.promote": "a deployment version was promoted",
    "deployment.rollback": "a deployment was rolled back",
    "deployment.scale": "a deployment's replicas were changed",
    "deployment.delete": "a deployment was deleted",
    "deployment.traffic": "a deployment's traffic split was changed",
    "deployment.grant": "who may invoke a deployment changed (details: users, groups, services)",
    "model.invoke_denied": "a call to a model endpoint was refused",
    "tracking.permission_grant": "an MLflow permission was granted",
    "tracking.permission_revoke": "an MLflow permission was revoked",
    "tracking.share": "an experiment or model was shared with groups",
    "secret.create": "a secret was created (never its value)",
    "secret.update": "a secret's value was replaced",
    "secret.use": "a run or replica received a secret",
    "secret.delete": "a secret was deleted",
    "environment.build": "a standard environment was built",
    "audit.read": "an admin read the audit trail",
    "audit.retention": "old records were pruned (details: the new anchor)",
}

ACTOR_KINDS = ("user", "service", "job", "system", "anonymous")
OUTCOMES = ("allowed", "denied", "failed")
