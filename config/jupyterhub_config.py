"""Shipyard's embedded default: one machine, SQLite, the local profile spawner.

Started by `shipyard up` (or `make up`). Every setting an admin is likely to
change can be given as an environment variable, so this file works unchanged
for the README, for CI and for a small team's server:

    SHIPYARD_INSTANCE        this Shipyard's name on the machine (shipyard): the cgroups, the users'
        system accounts, /opt/<instance>/envs, /var/lib/<instance>/runs and the temporary folders
        derive from it, so a staging and a production hub (with their own data dirs and ports)
        share nothing; the default keeps the names installs always had (hub_ext/host/instance.py)
    SHIPYARD_DATA_DIR        where the hub keeps its database, secrets and logs (.shipyard)
    SHIPYARD_BIND_URL        public URL of the hub (http://127.0.0.1:8000)
    SHIPYARD_HUB_BIND_URL    the hub's internal API (http://127.0.0.1:8081)
    SHIPYARD_PROXY_API_URL   configurable-http-proxy's API (http://127.0.0.1:8001)
    SHIPYARD_HUB_DB_URL      the hub's database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_AUTH            how people log in: native (per-user accounts, the default), ldap or oidc
    SHIPYARD_NATIVE_SIGNUP   native: 1 offers the sign-up page (an admin approves each sign-up); 0 does not
    SHIPYARD_NATIVE_LOCKOUT_FAILURES  native: failed logins in a row that lock an account (5; 0 never)
    SHIPYARD_NATIVE_LOCKOUT_SECONDS   native: how long a locked account stays locked (600)
    SHIPYARD_NATIVE_MIN_PASSWORD_LENGTH native: the shortest password accepted (10)
    SHIPYARD_LDAP_*          with SHIPYARD_AUTH=ldap, the directory (hub_ext/auth/ldap.py says more):
        URL (ldap://host for StartTLS, ldaps://host), TLS (starttls|ldaps|insecure), CA_FILE;
        BIND_DN_TEMPLATE (uid={username},ou=people,dc=example,dc=org), or USER_SEARCH_BASE and
        USER_ATTRIBUTE (uid; sAMAccountName in AD) to look users up; BIND_USER and
        BIND_PASSWORD_FILE (or BIND_PASSWORD), a search account; USER_FILTER; GROUP_SEARCH_BASE
        (the user's groups there become hub groups), GROUP_FILTER, GROUP_NAME_ATTRIBUTE (cn);
        ALLOWED_GROUPS (names) or ALLOW_ALL=1; ADMIN_GROUPS; REFRESH_AGE (300 s between re-reads)
    SHIPYARD_OIDC_*          with SHIPYARD_AUTH=oidc, the provider (hub_ext/auth/oidc.py says more):
        ISSUER (endpoints discovered), or AUTHORIZE_URL, TOKEN_URL and USERINFO_URL; CLIENT_ID;
        CLIENT_SECRET_FILE (or CLIENT_SECRET); SCOPES (openid profile email); USERNAME_CLAIM
        (preferred_username); GROUPS_CLAIM (groups: they become hub groups); ALLOWED_GROUPS or
        ALLOW_ALL=1; ADMIN_GROUPS; REFRESH_AGE (300 s between re-reads); CALLBACK_URL
        ($SHIPYARD_BIND_URL/hub/oauth_callback); CA_FILE; LOGIN_SERVICE; LOGOUT_URL
    SHIPYARD_PROFILES        the profiles file (config/profiles.yaml)
    SHIPYARD_CULL_TIMEOUT    seconds of inactivity before a server is culled (3600; 0 turns culling off)
    SHIPYARD_TRACKING        1 runs the tracking service (MLflow at /services/tracking/); 0 does not
    SHIPYARD_TRACKING_URL    where the tracking gateway listens (http://127.0.0.1:8002)
    SHIPYARD_TRACKING_DB_URL MLflow's database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_SCHEDULER       1 runs the scheduler service (notebook jobs at /services/scheduler/); 0 does not
    SHIPYARD_SCHEDULER_URL   where the scheduler listens (http://127.0.0.1:8003)
    SHIPYARD_SCHEDULER_DB_URL the scheduler's database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_RUNS_DIR        where runs keep their logs and outputs (/var/lib/shipyard/runs as root)
    SHIPYARD_SCHEDULER_CONFIG a scheduler config file (c.SchedulerService..., c.LocalExecutor..., c.Notifier...)
    SHIPYARD_DEPLOYER        1 runs the deployer service (model endpoints at /services/deployer/); 0 does not
    SHIPYARD_DEPLOYER_URL    where the deployer listens (http://127.0.0.1:8004)
    SHIPYARD_DEPLOYER_DB_URL the deployer's database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_DEPLOYER_CONFIG a deployer config file (c.DeployerService..., c.LocalBackend...)
    SHIPYARD_SECRETS         1 runs the secrets service (users' secrets at /services/secrets/); 0 does not
    SHIPYARD_SECRETS_URL     where the secrets service listens (http://127.0.0.1:8005)
    SHIPYARD_SECRETS_DB_URL  the secrets database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_SECRETS_KEY_FILE the key file that encrypts secret values ($SHIPYARD_DATA_DIR/secrets.key, made 0600)
    SHIPYARD_SECRETS_BACKEND where values are kept: database (encrypted, the default) or kubernetes (Secrets)
    SHIPYARD_SECRETS_CONFIG  a secrets service config file (c.SecretsService..., c.DatabaseBackend...)
    SHIPYARD_ALERTS          1 runs the alerts service (alert rules and notifications at /services/alerts/); 0 does not
    SHIPYARD_ALERTS_URL      where the alerts service listens (http://127.0.0.1:8008)
    SHIPYARD_ALERTS_DB_URL   the alerts database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_ALERTS_ADMIN_URLS apprise URLs (space-separated) every alert is sent to: the admins'
    SHIPYARD_ALERTS_CONFIG   an alerts config file (c.AlertsService..., c.AlertRules..., c.AlertNotifier...)
    SHIPYARD_AUDIT           0 turns the audit trail off (1: every privileged action is recorded)
    SHIPYARD_AUDIT_DIR       the trail's JSON-lines file, archives and SQLite table ($SHIPYARD_DATA_DIR/audit)
    SHIPYARD_AUDIT_DB_URL    the trail's table (sqlite in the audit dir; a postgresql:// URL in production)
    SHIPYARD_AUDIT_RETENTION_DAYS days an audit record is kept (365; 0 keeps them forever)
    SHIPYARD_AUDIT_SERVICE   1 runs the audit service (the trail's REST API for admins at /services/audit/); 0 does not
    SHIPYARD_AUDIT_SERVICE_URL where the audit service listens (http://127.0.0.1:8006)
    SHIPYARD_USAGE           1 runs the usage service (usage, cost and right-sizing at /services/usage/); 0 does not
    SHIPYARD_USAGE_URL       where the usage service listens (http://127.0.0.1:8007)
    SHIPYARD_USAGE_DB_URL    the usage database (sqlite in the data dir; a postgresql:// URL in production)
    SHIPYARD_USAGE_CONFIG    a usage service config file (c.UsageService...: prices, sample interval)
    SHIPYARD_PROMETHEUS      1 (default) declares the service `prometheus` whose token
        ($SHIPYARD_DATA_DIR/prometheus-token, 0600) may read /hub/metrics and every service's
        metrics and nothing else (read:metrics); give it to Prometheus (docs/observability.md); 0 does not
    SHIPYARD_PLACEMENT       how users' servers, runs and models run here: process (default) or container
        (podman, from the environments' images: docs/containers.md); `shipyard up --placement`
    SHIPYARD_MLFLOW_TELEMETRY 1 lets MLflow send its usage telemetry from the services, servers,
        kernels, runs and model servers; off by default (MLFLOW_DISABLE_TELEMETRY and DO_NOT_TRACK
        are set in every process Shipyard starts: hub_ext/host/telemetry.py)

Anything else: add `c.Class.trait = value` lines below, as in any jupyterhub_config.py.
`c.LocalHost.<setting>` (accounts, cgroups, environments and GPUs: hub_ext/host/local.py)
configures the servers, the scheduler's runs and the deployer's models at once: the hub
passes that section on to the services it starts.
"""

import os
import shutil
import sys
from pathlib import Path

from hub_ext.auth import configure_authenticator
from hub_ext.host import instance, telemetry
from hub_ext.hub.embedded import data_dir, load_or_create_token

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

data = data_dir()
env = os.environ.get
# MLflow's usage telemetry off (SHIPYARD_MLFLOW_TELEMETRY=1 allows it): in the hub's own
# environment for the processes it starts with it (the proxy); the services get it below,
# and the spawner and the services give it to servers, kernels, runs and model servers
os.environ.update(telemetry.environment())

# -- where the hub listens and keeps its state
c.JupyterHub.bind_url = env("SHIPYARD_BIND_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_bind_url = env("SHIPYARD_HUB_BIND_URL", "http://127.0.0.1:8081")
c.JupyterHub.db_url = env("SHIPYARD_HUB_DB_URL", f"sqlite:///{data}/jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
# the managed services' pids and tokens: they outlive a hub that crashes, and the next
# hub adopts them (hub_ext/hub/app.py)
c.ShipyardHub.service_state_dir = str(data / "services")

# -- how users' servers run here: processes, or containers from the environments' images
if env("SHIPYARD_PLACEMENT"):
    c.LocalHost.placement = env("SHIPYARD_PLACEMENT").strip().lower()

# -- the proxy: configurable-http-proxy, installed next to the hub's Python by `make install`
c.ConfigurableHTTPProxy.api_url = env("SHIPYARD_PROXY_API_URL", "http://127.0.0.1:8001")
c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")
# a hub restarted after a crash adopts the proxy that still runs (its token is kept
# beside the pid file) instead of replacing it: no request is refused meanwhile
c.JupyterHub.proxy_class = "hub_ext.hub.proxy.ShipyardProxy"
chp = shutil.which(
    "configurable-http-proxy",
    path=os.pathsep.join([str(Path(sys.prefix) / "bin"), env("PATH", "")]),
)
if chp:
    c.ConfigurableHTTPProxy.command = [chp]

# -- login: per-user accounts (SHIPYARD_AUTH: native, ldap or oidc); no shared password.
# native: the admin's password is generated and printed once by `shipyard up`; users sign
# up and wait for an admin's approval, or an admin adds them (`shipyard users add NAME`)
configure_authenticator(c, data)

# -- servers: one per user (and named servers), each in its resource profile
c.JupyterHub.spawner_class = "shipyard-local"
c.JupyterHub.allow_named_servers = True
c.Spawner.default_url = "/lab"
c.LocalProfileSpawner.profiles_file = env(
    "SHIPYARD_PROFILES", str(Path(__file__).resolve().parent / "profiles.yaml")
)
c.JupyterHub.cleanup_servers = env("SHIPYARD_CLEANUP_SERVERS", "1") != "0"

# -- services
c.JupyterHub.services = []
# every user's role, and what their servers' tokens (kernels, the panel) may do; each
# service below that users call adds its access scope to both (allow_users)
user_role = {"name": "user", "scopes": ["self"]}
c.JupyterHub.load_roles = [user_role]
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server"]
public_url = env("SHIPYARD_BIND_URL", "http://127.0.0.1:8000").rstrip("/")


def allow_users(*scopes: str) -> None:
    """Give every user, and their servers' tokens, ``scopes`` (a service's access...)."""
    user_role["scopes"] += scopes
    c.Spawner.server_token_scopes = [*c.Spawner.server_token_scopes, *scopes]


def only_set(**variables: str | None) -> dict[str, str]:
    """A service's ``environment``: the variables that have a value (hub-side settings)."""
    return {name: value for name, value in variables.items() if value}


def service_on(name: str) -> bool:
    """Whether ``SHIPYARD_<NAME>`` runs that service (every service is on by default)."""
    return env(f"SHIPYARD_{name.upper()}", "1") != "0"


cull_timeout = int(env("SHIPYARD_CULL_TIMEOUT", "3600"))
if cull_timeout > 0:
    c.JupyterHub.services.append(
        {
            "name": "idle-culler",
            "command": [
                sys.executable,
                "-m",
                # jupyterhub-idle-culler that keeps its token out of the log and dies with
                # the hub (hub_ext/hub/culler.py)
                "hub_ext.hub.culler",
                f"--timeout={cull_timeout}",
                f"--cull-every={max(10, min(300, cull_timeout // 2))}",
            ],
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )

# `shipyard profiles usage` and `shipyard users` reach the hub with this token
c.JupyterHub.services.append(
    {"name": "shipyard-cli", "api_token": load_or_create_token(data, "cli-token")}
)
c.JupyterHub.load_roles.append(
    {
        "name": "shipyard-cli",
        # admin:users, admin:groups: `shipyard users add/list/reset-password/approve`;
        # tokens: `shipyard jobs` and `shipyard models` on this machine get a short-lived token
        # of the admin's for the scheduler or the deployer (hub_ext/cli/common.py), since
        # those services act for users, never for a service
        "scopes": [
            "list:users",
            "read:users",
            "read:servers",
            "admin:server_state",
            "read:groups",
            "admin:users",
            "admin:groups",
            "tokens",
        ],
        "services": ["shipyard-cli"],
    }
)

# -- experiment tracking: a managed MLflow behind hub login at /services/tracking/
if service_on("tracking"):
    c.JupyterHub.services.append(
        {
            "name": "tracking",
            "url": env("SHIPYARD_TRACKING_URL", "http://127.0.0.1:8002"),
            "command": [sys.executable, "-m", "hub_ext.services.tracking"],
            "display": True,
            "oauth_no_confirm": True,
            # hub-side settings only; the service passes none of them to users
            "environment": only_set(
                SHIPYARD_DATA_DIR=str(data),
                SHIPYARD_TRACKING_DB_URL=env("SHIPYARD_TRACKING_DB_URL"),
                SHIPYARD_TRACKING_AUTH_DB_URL=env("SHIPYARD_TRACKING_AUTH_DB_URL"),
                SHIPYARD_TRACKING_ARTIFACTS=env("SHIPYARD_TRACKING_ARTIFACTS"),
            ),
        }
    )
    # every user may use it, and so may their servers' tokens (which kernels inherit)
    allow_users("access:services!service=tracking")
    c.LocalProfileSpawner.tracking_url = public_url + "/services/tracking"

# -- scheduled notebooks: papermill jobs at /services/scheduler/, running while servers are stopped
if service_on("scheduler"):
    c.JupyterHub.services.append(
        {
            "name": "scheduler",
            "url": env("SHIPYARD_SCHEDULER_URL", "http://127.0.0.1:8003"),
            "command": [sys.executable, "-m", "hub_ext.services.scheduler"],
            "display": False,
            "oauth_no_confirm": True,
            # hub-side settings only: runs get none of them (the executor builds their
            # environment from nothing)
            "environment": only_set(
                SHIPYARD_DATA_DIR=str(data),
                SHIPYARD_PROFILES=str(c.LocalProfileSpawner.profiles_file),
                SHIPYARD_PUBLIC_URL=public_url,
                SHIPYARD_SCHEDULER_DB_URL=env("SHIPYARD_SCHEDULER_DB_URL"),
                SHIPYARD_RUNS_DIR=env("SHIPYARD_RUNS_DIR"),
                SHIPYARD_ENVS_DIR=env("SHIPYARD_ENVS_DIR"),
                SHIPYARD_SCHEDULER_CONFIG=env("SHIPYARD_SCHEDULER_CONFIG"),
                SHIPYARD_SMTP_PASSWORD=env("SHIPYARD_SMTP_PASSWORD"),
                SHIPYARD_SCHEDULER_TRACKING_URL=(
                    public_url + "/services/tracking" if service_on("tracking") else None
                ),
                SHIPYARD_SCHEDULER_DEPLOYER_URL=(
                    public_url + "/services/deployer" if service_on("deployer") else None
                ),
            ),
        }
    )
    # the service reads users' groups (quotas, profiles, shared jobs); it gives each run a
    # token of its owner's that expires with the run, for the tracking service and the
    # deployer only (a token's scopes must be the service's own too)
    scheduler_scopes = ["list:users", "read:users:groups", "read:users:name"]
    run_scopes = [
        f"access:services!service={name}" for name in ("tracking", "deployer") if service_on(name)
    ]
    if run_scopes:
        scheduler_scopes += ["tokens", *run_scopes]
    c.JupyterHub.load_roles.append(
        {"name": "scheduler", "scopes": scheduler_scopes, "services": ["scheduler"]}
    )
    # users, and their servers' tokens (the magics, the panel), may call it
    allow_users("access:services!service=scheduler")
    c.LocalProfileSpawner.scheduler_url = public_url + "/services/scheduler"

# -- model deployment: MLflow models as versioned endpoints at /services/deployer/
if service_on("deployer"):
    c.JupyterHub.services.append(
        {
            "name": "deployer",
            "url": env("SHIPYARD_DEPLOYER_URL", "http://127.0.0.1:8004"),
            "command": [sys.executable, "-m", "hub_ext.services.deployer"],
            "display": False,
            "oauth_no_confirm": True,
            # hub-side settings only: model servers get none of them
            "environment": only_set(
                SHIPYARD_DATA_DIR=str(data),
                SHIPYARD_PROFILES=str(c.LocalProfileSpawner.profiles_file),
                SHIPYARD_DEPLOYER_DB_URL=env("SHIPYARD_DEPLOYER_DB_URL"),
                SHIPYARD_ENVS_DIR=env("SHIPYARD_ENVS_DIR"),
                SHIPYARD_DEPLOYER_CONFIG=env("SHIPYARD_DEPLOYER_CONFIG"),
                SHIPYARD_DEPLOYER_TRACKING_URL=(
                    public_url + "/services/tracking" if service_on("tracking") else None
                ),
                # lineage reads scheduler and pipeline runs there, with the caller's token;
                # straight to the service (it is served under its prefix there too)
                SHIPYARD_SCHEDULER_URL=(
                    env("SHIPYARD_SCHEDULER_URL", "http://127.0.0.1:8003").rstrip("/")
                    + "/services/scheduler"
                    if service_on("scheduler")
                    else None
                ),
            ),
        }
    )
    # models are invoked with hub tokens that carry this scope (filterable !user=<owner>)
    c.JupyterHub.custom_scopes = {
        **(c.JupyterHub.custom_scopes if isinstance(c.JupyterHub.custom_scopes, dict) else {}),
        "custom:models:invoke": {
            "description": "Invoke deployed models (the owner's, and those shared with you).",
        },
    }
    # the service reads users' groups (profiles, group grants); with tracking on it gives
    # each model server a short-lived token of its owner's, for the tracking service only
    deployer_scopes = ["list:users", "read:users:groups", "read:users:name"]
    if service_on("tracking"):
        deployer_scopes += ["tokens", "access:services!service=tracking"]
    c.JupyterHub.load_roles.append(
        {"name": "deployer", "scopes": deployer_scopes, "services": ["deployer"]}
    )
    # users and servers' tokens (%deploy, notebooks calling a model) may call the API and invoke
    allow_users("access:services!service=deployer", "custom:models:invoke")
    c.LocalProfileSpawner.deployer_url = public_url + "/services/deployer"

# -- the JupyterLab panel's Audit section (hub admins only): each server forwards to the audit
# service with its own token, so it needs the service's public address (as the other services'
# *_url settings give theirs)
if service_on("audit_service"):
    c.Spawner.environment.update({"SHIPYARD_AUDIT_URL": public_url + "/services/audit"})

# -- secrets: users' named secrets at /services/secrets/, given to their runs and replicas
if service_on("secrets"):
    secrets_url = env("SHIPYARD_SECRETS_URL", "http://127.0.0.1:8005")
    c.JupyterHub.services.append(
        {
            "name": "secrets",
            "url": secrets_url,
            "command": [sys.executable, "-m", "hub_ext.services.secrets"],
            "display": False,
            "oauth_no_confirm": True,
            # hub-side settings only; the key file is never passed to anyone
            "environment": only_set(
                SHIPYARD_DATA_DIR=str(data),
                SHIPYARD_SECRETS_DB_URL=env("SHIPYARD_SECRETS_DB_URL"),
                SHIPYARD_SECRETS_KEY_FILE=env("SHIPYARD_SECRETS_KEY_FILE"),
                SHIPYARD_SECRETS_BACKEND=env("SHIPYARD_SECRETS_BACKEND"),
                SHIPYARD_SECRETS_CONFIG=env("SHIPYARD_SECRETS_CONFIG"),
            ),
        }
    )
    # the service only checks tokens: it needs no scope of its own
    c.JupyterHub.load_roles.append({"name": "secrets", "scopes": [], "services": ["secrets"]})
    # users and their servers' tokens (%secret, the CLI) may call it
    allow_users("access:services!service=secrets")
    c.LocalProfileSpawner.secrets_url = public_url + "/services/secrets"
    # the scheduler and the deployer resolve values for runs and replicas (POST api/resolve),
    # straight to the service (it is served under its prefix there too)
    for role in c.JupyterHub.load_roles:
        if role["name"] in ("scheduler", "deployer"):
            role["scopes"].append("access:services!service=secrets")
    for service in c.JupyterHub.services:
        if service["name"] in ("scheduler", "deployer"):
            service.setdefault("environment", {})["SHIPYARD_SECRETS_API_URL"] = (
                secrets_url.rstrip("/") + "/services/secrets/"
            )

# -- usage accounting: what every server, run, step and replica used, its cost, right-sizing
# (docs/observability.md); it reads the usage ledger c.LocalHost.usage_dir, which the hub,
# the scheduler and the deployer write, so it runs on this machine, as root like them
if service_on("usage"):
    c.JupyterHub.services.append(
        {
            "name": "usage",
            "url": env("SHIPYARD_USAGE_URL", "http://127.0.0.1:8007"),
            "command": [sys.executable, "-m", "hub_ext.services.usage"],
            "display": False,
            "oauth_no_confirm": True,
            "environment": only_set(
                SHIPYARD_DATA_DIR=str(data),
                SHIPYARD_USAGE_DB_URL=env("SHIPYARD_USAGE_DB_URL"),
                SHIPYARD_USAGE_CONFIG=env("SHIPYARD_USAGE_CONFIG"),
            ),
        }
    )
    # read:users: whether a caller is an admin (a server's token does not say) and the
    # owners' groups (the report by group)
    c.JupyterHub.load_roles.append(
        {"name": "usage", "scopes": ["read:users"], "services": ["usage"]}
    )
    # every user reads their own usage (the service shows nobody else's), from a terminal
    # of their server too (`shipyard usage report`)
    allow_users("access:services!service=usage")
    c.Spawner.environment.update({"SHIPYARD_USAGE_URL": public_url + "/services/usage"})
else:
    # nobody reads the ledger: the hub, the scheduler and the deployer write none
    c.LocalHost.usage_dir = ""
# -- alerts: Shipyard evaluates its own alert rules (models, jobs, disk) and notifies the
# owner and the admins through apprise, with no extra server (docs/observability.md, "Alerts")
if service_on("alerts"):
    alerts_scopes = ["list:users", "read:users:name", "read:users", "read:servers"]
    alerts_env = only_set(
        SHIPYARD_DATA_DIR=str(data),
        SHIPYARD_PROFILES=str(c.LocalProfileSpawner.profiles_file),
        SHIPYARD_PUBLIC_URL=public_url,
        SHIPYARD_ALERTS_DB_URL=env("SHIPYARD_ALERTS_DB_URL"),
        SHIPYARD_ALERTS_CONFIG=env("SHIPYARD_ALERTS_CONFIG"),
        SHIPYARD_ALERTS_ADMIN_URLS=env("SHIPYARD_ALERTS_ADMIN_URLS"),
    )
    # it reads the scheduler, the deployer and the usage service (idle GPUs) as a monitor
    # (their `monitors` trait names it), straight to each service (served under its prefix
    # there too)
    for name, variable, default_url in (
        ("scheduler", "SHIPYARD_SCHEDULER_URL", "http://127.0.0.1:8003"),
        ("deployer", "SHIPYARD_DEPLOYER_URL", "http://127.0.0.1:8004"),
        ("usage", "SHIPYARD_USAGE_URL", "http://127.0.0.1:8007"),
    ):
        if service_on(name):
            alerts_scopes.append(f"access:services!service={name}")
            alerts_env[f"SHIPYARD_ALERTS_{name.upper()}_URL"] = (
                env(variable, default_url).rstrip("/") + f"/services/{name}"
            )
    c.JupyterHub.services.append(
        {
            "name": "alerts",
            "url": env("SHIPYARD_ALERTS_URL", "http://127.0.0.1:8008"),
            "command": [sys.executable, "-m", "hub_ext.services.alerts"],
            "display": False,
            "oauth_no_confirm": True,
            "environment": alerts_env,
        }
    )
    # list:users and read:users:name: whose jobs and models to read; read:users: whether a
    # caller of its API is an admin (a server's token does not say), and users' groups;
    # read:servers: the profile each running server was started with (the quota rule)
    c.JupyterHub.load_roles.append(
        {"name": "alerts", "scopes": alerts_scopes, "services": ["alerts"]}
    )
    # users and their servers' tokens (the panel) read their alerts and set their targets
    allow_users("access:services!service=alerts")
    # the panel's Alerts section reads them through the server (server_ext/handlers/alerts.py)
    c.Spawner.environment.update({"SHIPYARD_ALERTS_URL": public_url + "/services/alerts"})

# -- audit trail: one hash-chained record per privileged action, in the hub and every
# service (hub_ext/audit). Keep this block last: it passes the trail's settings to every
# hub-managed service declared above.
from hub_ext.audit.hub import configure as configure_audit  # noqa: E402

os.environ.setdefault("SHIPYARD_AUDIT_DIR", str(data / "audit"))  # the hub's own records
configure_audit(c)  # the hub's REST API: users, groups, roles, tokens
if service_on("audit_service"):
    c.JupyterHub.services.append(
        {
            "name": "audit",
            "url": env("SHIPYARD_AUDIT_SERVICE_URL", "http://127.0.0.1:8006"),
            "command": [sys.executable, "-m", "hub_ext.services.audit"],
            "display": False,
            "oauth_no_confirm": True,
        }
    )
    # read:users: the service asks the hub whether a caller is an admin (a server's token
    # does not say); the service itself refuses everyone else
    c.JupyterHub.load_roles.append(
        {"name": "audit", "scopes": ["read:users"], "services": ["audit"]}
    )
    # the JupyterLab panel (a server's token) shows the admin section from it
    allow_users("access:services!service=audit")
service_env = only_set(
    SHIPYARD_AUDIT=env("SHIPYARD_AUDIT"),
    SHIPYARD_AUDIT_DIR=env("SHIPYARD_AUDIT_DIR"),
    SHIPYARD_AUDIT_DB_URL=env("SHIPYARD_AUDIT_DB_URL"),
    SHIPYARD_AUDIT_RETENTION_DAYS=env("SHIPYARD_AUDIT_RETENTION_DAYS"),
)
# every hub-managed service writes the same trail, and derives its machine-wide names
# (cgroups, accounts, folders) from the same instance name as the hub's spawner
service_env["SHIPYARD_INSTANCE"] = instance.name()
# ...and the same choice about MLflow's usage telemetry, which they pass on to their
# runs and model servers (tracking: to its mlflow server)
service_env.update(telemetry.environment())
for service in c.JupyterHub.services:
    if "command" in service:
        service.setdefault("environment", {}).update(service_env)

# -- Prometheus: a service with no process, whose token reads the hub's /hub/metrics and
# each service's `metrics` (read:metrics) and nothing else; the admin hands the token file
# to Prometheus (config/prometheus/prometheus.yml, docs/observability.md). Each service's
# access scope lets the token through the service's login; the services answer it only at
# `metrics` (the scheduler and the deployer act for users only, tracking and secrets check
# their callers' own rights, audit is for admins).
if service_on("prometheus"):
    c.JupyterHub.services.append(
        {"name": "prometheus", "api_token": load_or_create_token(data, "prometheus-token")}
    )
    served = [s["name"] for s in c.JupyterHub.services if "url" in s]
    c.JupyterHub.load_roles.append(
        {
            "name": "prometheus",
            "scopes": ["read:metrics", *(f"access:services!service={n}" for n in served)],
            "services": ["prometheus"],
        }
    )
