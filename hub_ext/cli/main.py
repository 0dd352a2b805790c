"""The ``shipyard`` command.

    shipyard up                              start the embedded platform (hub on $SHIPYARD_BIND_URL)
    shipyard credentials                     show the generated admin credentials again
    shipyard users add NAME [--group G]      add a user; prints a one-time password
    shipyard users list | reset-password NAME | approve NAME
    shipyard profiles validate FILE [FILE…]  check profiles files, every error with file:line
    shipyard profiles export --format z2jh   print Zero to JupyterHub's singleuser.profileList
    shipyard profiles usage                  who runs which profile, and their quota use
    shipyard env list                        the environments in images/ and their builds
    shipyard env build ENV [ENV…]            build environments from their locks (cached)
    shipyard env check ENV [ENV…]            compare built environments with their locks
    shipyard jobs list                       your scheduled notebooks, next and last runs (ids)
    shipyard jobs run JOB [-p K=V] [--wait]  run a job now; --wait shows its cells as they run
    shipyard jobs logs RUN|JOB [--follow]    a run's log (a job's: its newest run's)
    shipyard jobs output RUN|JOB [-o FILE]   save a run's output notebook (--format html)
    shipyard pipeline create PATH            a pipeline from its pipeline.yaml (again: re-read it)
    shipyard pipeline list                   your pipelines, their last runs (ids)
    shipyard pipeline run NAME [-p K=V] [--wait]   run it; --wait shows its steps as they change
    shipyard pipeline status|repair|cancel RUN     a run's steps; rerun its failed ones; stop it
    shipyard models list                     deployed models: traffic, newest version, state
    shipyard models status NAME              one deployment's versions, health and endpoint
    shipyard models rollback NAME [--to V]   all traffic back to the version before (or V)

Errors are one clear line on stderr and exit status 1 (2 for a wrong command
line); no traceback for anything a user can fix. ``jobs``, ``pipeline`` and ``models`` send
the user's token, or on the hub's machine the hub admin's (:mod:`hub_ext.cli.common`); the
command modules are :mod:`hub_ext.cli.jobs`, :mod:`hub_ext.cli.pipelines` and
:mod:`hub_ext.cli.models`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from hub_ext.audit import cli as audit_cli
from hub_ext.audit import emit as audit_emit
from hub_ext.auth import cli as users_cli
from hub_ext.cli import images as images_cli
from hub_ext.cli import jobs as jobs_cli
from hub_ext.cli import models as models_cli
from hub_ext.cli import pipelines as pipelines_cli
from hub_ext.cli import secrets as secrets_cli
from hub_ext.cli import usage as usage_cli
from hub_ext.cli.common import CLIError, data_dir_of, hub_api_url, hub_url
from hub_ext.environments.build import EnvironmentBuilder
from hub_ext.environments.catalog import (
    EnvironmentProblem,
    default_envs_dir,
    find_built,
    get_environment,
    image_environment,
    list_environments,
)
from hub_ext.environments.check import compare
from hub_ext.host import instance
from hub_ext.host.gpus import detect_gpus
from hub_ext.profiles.loader import ProfilesInvalid, load_profiles
from hub_ext.profiles.model import Profile, ProfilesConfig
from hub_ext.profiles.quantities import format_cpu, format_memory
from hub_ext.profiles.z2jh import z2jh_values
from hub_ext.spawners.mixin import Usage, default_profiles_file

# ---------------------------------------------------------------------- up


def _config_file(explicit: str | None) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise CLIError(f"Config file {explicit} does not exist.")
        return path.resolve()
    for candidate in (
        Path("config/jupyterhub_config.py"),
        Path(sys.prefix) / "share" / "shipyard" / "config" / "jupyterhub_config.py",
    ):
        if candidate.is_file():
            return candidate.resolve()
    raise CLIError(
        "No config/jupyterhub_config.py here and none installed with Shipyard; "
        "run from the repository or pass --config."
    )


def _check_login_settings() -> str:
    """SHIPYARD_AUTH's choice, its settings checked before anything starts (CLIError if not).

    The directory choices (ldap, oidc) read their SHIPYARD_LDAP_* / SHIPYARD_OIDC_*
    settings here the way the hub's config will, so a missing one is one line naming the
    variable rather than a traceback in the hub's log after environments were built.
    """
    from traitlets.config import Config

    from hub_ext.auth import AuthConfigError, configure_authenticator
    from hub_ext.hub.embedded import data_dir

    auth = (os.environ.get("SHIPYARD_AUTH") or "native").strip().lower()
    if auth == "native":
        return auth
    try:
        configure_authenticator(Config(), data_dir())
    except AuthConfigError as e:
        raise CLIError(f"The login settings are incomplete: {e}") from None
    return auth


def cmd_up(args: argparse.Namespace) -> int:
    from hub_ext.hub.embedded import data_dir, load_or_create_credentials

    if args.data_dir:
        os.environ["SHIPYARD_DATA_DIR"] = args.data_dir
    if args.bind_url:
        os.environ["SHIPYARD_BIND_URL"] = args.bind_url
    if args.profiles:
        os.environ["SHIPYARD_PROFILES"] = str(Path(args.profiles).resolve())
    if args.envs_dir:
        os.environ["SHIPYARD_ENVS_DIR"] = str(Path(args.envs_dir).resolve())
    if args.instance:
        os.environ["SHIPYARD_INSTANCE"] = args.instance
    if args.placement:
        os.environ["SHIPYARD_PLACEMENT"] = args.placement
    placement = os.environ.get("SHIPYARD_PLACEMENT", "process").strip().lower() or "process"
    if placement not in PLACEMENTS:
        raise CLIError(
            f"SHIPYARD_PLACEMENT={placement!r}: use one of {', '.join(PLACEMENTS)} "
            "(docs/containers.md)."
        )
    try:
        instance_name = instance.name()
    except instance.InvalidInstanceName as e:
        raise CLIError(str(e)) from None
    auth = _check_login_settings()
    config = _config_file(args.config)
    profiles = os.environ.get("SHIPYARD_PROFILES") or str(config.parent / "profiles.yaml")
    try:
        loaded = load_profiles(profiles, environments=list(list_environments()))
    except ProfilesInvalid as e:
        raise CLIError(f"The profiles file has errors; fix them and start again:\n{e}") from None
    if placement == "container":  # servers, runs and replicas all run from the images
        _build_profile_images(loaded)
    else:
        _build_profile_environments(loaded)

    path = os.pathsep.join([str(Path(sys.prefix) / "bin"), os.environ.get("PATH", "")])
    if not shutil.which("configurable-http-proxy", path=path):
        raise CLIError(
            "configurable-http-proxy is not installed. Run `make install` (it installs it "
            "with npm next to the hub), or `npm install -g configurable-http-proxy`."
        )
    os.environ["PATH"] = path

    directory = data_dir()
    creds, created = load_or_create_credentials(directory)
    url = os.environ.get("SHIPYARD_BIND_URL", "http://127.0.0.1:8000")
    if auth != "native":
        print(
            f"\n  People log in through the organisation's directory (SHIPYARD_AUTH={auth}); "
            "its groups\n  become hub groups at each login.\n",
            flush=True,
        )
    elif created:
        print(
            "\n  Shipyard generated login credentials (shown once; kept with mode 0600 in\n"
            f"  {directory / 'credentials.json'}; `shipyard credentials` shows them again):\n\n"
            f"    admin user      {creds.admin_user}\n"
            f"    admin password  {creds.admin_password}\n\n"
            "  Everyone else has a password of their own: add people with\n"
            "  `shipyard users add NAME` (it prints a one-time password they change at first\n"
            f"  login), or approve their sign-ups ({url}/hub/signup) at {url}/hub/authorize.\n",
            flush=True,
        )
    if os.geteuid() != 0:
        print(
            "  Warning: not running as root, so every user's server runs as "
            f"{os.environ.get('USER', 'this user')} with no isolation between users.\n",
            file=sys.stderr,
            flush=True,
        )
    named = "" if instance_name == instance.DEFAULT else f" (instance {instance_name})"
    print(f"  Starting JupyterHub on {url}{named} (Ctrl-C stops everything)\n", flush=True)
    os.chdir(directory)
    argv = [sys.executable, "-m", "hub_ext.hub", "-f", str(config)]  # JupyterHub (hub/app.py)
    os.execv(sys.executable, argv)  # noqa: S606 - the hub takes over this process and its signals


def _build_profile_environments(config: ProfilesConfig) -> None:
    """Build (or reuse) the environment of every profile that can start on this machine."""
    gpus = detect_gpus()
    needed: dict[str, list[str]] = {}
    for profile in config.profiles:
        if profile.gpu and len(gpus) < profile.gpu:
            print(
                f"  Skipping environment {profile.environment!r}: profile '{profile.slug}' needs "
                f"{profile.gpu} GPU(s) and this machine has {len(gpus)}.",
                flush=True,
            )
            continue
        needed.setdefault(profile.environment, []).append(profile.slug)
    for name, slugs in needed.items():
        print(f"  Environment {name!r} (profiles: {', '.join(slugs)})", flush=True)
        _build_one(name, force=False, installer="auto", python=None, echo=False)


#: How users' code may run on one machine (``c.LocalHost.placement``).
PLACEMENTS = ("process", "container")


def _build_profile_images(config: ProfilesConfig) -> None:
    """Make the image of every profile's environment that podman does not have yet.

    Servers, scheduled runs and model replicas run in containers of these images
    (``--placement container``), so no virtual environment is built for them. An image
    that exists is kept: after changing Shipyard itself, ``shipyard image build ENV`` makes
    it again (podman's layer cache keeps that short). With no base image here, the
    Debian base is made first (``shipyard image base``): a machine that can pull from a
    public registry may build with ``shipyard image build --base public ENV`` instead.
    """
    from hub_ext.environments.images import (
        BASE_TAG,
        build_base,
        build_image,
        choose_base,
        image_exists,
        image_tag,
        takes_base,
    )

    def say(line: str) -> None:
        print(f"    {line}", flush=True)

    from hub_ext.host.containers import ContainerPlacement

    # a GPU profile's image only where containers can be given GPUs (CDI): as for processes,
    # whose GPU environments are only built on a machine with a GPU
    gpus = len(ContainerPlacement().gpu_devices())
    names = sorted({p.environment for p in config.profiles if p.gpu <= gpus})
    try:
        missing = []
        for env in (get_environment(name) for name in names):
            if image_exists(image_tag(env)):
                print(f"  Image of {env.name!r}: {image_tag(env)} (kept)", flush=True)
            else:
                missing.append(env)
        if not missing:
            return
        if any(takes_base(env.dockerfile) and choose_base(env, "auto") is None for env in missing):
            print(f"  Base image {BASE_TAG} (Debian's packages, made once)", flush=True)
            build_base(say=say)
        wheel = EnvironmentBuilder().shipyard_wheel()
        for env in missing:
            print(f"  Image of {env.name!r} (a few minutes the first time)", flush=True)
            built = build_image(env, wheel, say=say)
            print(f"    {built.tag} in {built.seconds:.0f} s", flush=True)
    except EnvironmentProblem as e:
        raise CLIError(
            f"{e}\nContainers need the environments' images: docs/containers.md."
        ) from None


def _audit_build(name: str, outcome: str, reason: str | None, details: dict) -> None:
    """Record ``environment.build`` for the account that ran the command."""
    import getpass

    audit_emit(
        "environment.build",
        actor=getpass.getuser(),
        actor_kind="system",
        target=f"environment/{name}",
        outcome=outcome,
        reason=reason,
        details=details,
    )


def _build_one(name: str, *, force: bool, installer: str, python: str | None, echo: bool):
    started = time.monotonic()

    def progress(step: int, steps: int, message: str) -> None:
        print(f"    [{step}/{steps}] {message}  ({time.monotonic() - started:.1f} s)", flush=True)

    try:
        env = get_environment(name)
        builder = EnvironmentBuilder(
            installer=installer, python=python, progress=progress, echo=echo
        )
        result = builder.build(env, force=force)
    except EnvironmentProblem as e:
        _audit_build(name, "failed", str(e), {"installer": installer})
        raise CLIError(str(e)) from None
    built = result.env
    if not result.reused:  # an up-to-date environment was not built again
        _audit_build(name, "allowed", None, {"digest": built.digest, "installer": installer})
    verb = "is up to date" if result.reused else f"built in {result.seconds:.1f} s"
    print(f"  {name} {verb}: {built.path} ({built.digest[:19]}…)", flush=True)
    return result


# ------------------------------------------------------------- environments


def cmd_env_list(args: argparse.Namespace) -> int:
    envs = list_environments()
    if not envs:
        raise CLIError("No environments found: set SHIPYARD_IMAGES to the images/ folder.")
    print(f"{'ENVIRONMENT':14} {'PACKAGES':>8}  {'LOCK DIGEST':20} BUILT")
    for name, env in envs.items():
        try:
            count, digest = len(env.packages()), env.digest
        except EnvironmentProblem as e:
            print(f"{name:14} {'?':>8}  {'?':20} lock unreadable: {e}")
            continue
        built = find_built(name) or image_environment(name)
        if built is None:
            state = "no"
        elif built.digest == digest:
            state = f"yes, {built.built_at} ({built.installer})"
        else:
            state = "out of date: the lock changed since the build"
        print(f"{name:14} {count:>8}  {digest[:19]:20} {state}")
    print(f"\nBuilt in {default_envs_dir()}; build with `shipyard env build ENV`.")
    return 0


def cmd_env_build(args: argparse.Namespace) -> int:
    for name in args.envs:
        print(f"Environment {name!r}", flush=True)
        _build_one(name, force=args.force, installer=args.installer, python=args.python, echo=True)
    return 0


def cmd_env_check(args: argparse.Namespace) -> int:
    drifted = 0
    for name in args.envs:
        try:
            env = get_environment(name)
            built = find_built(name) or image_environment(name)
            if built is None:
                raise CLIError(
                    f"Environment {name!r} is not built in {default_envs_dir()}: "
                    f"`shipyard env build {name}`."
                )
            drift = compare(env, built.python)
        except EnvironmentProblem as e:
            raise CLIError(str(e)) from None
        stale = built.digest != env.digest
        if not drift and not stale:
            print(f"{name}: matches its lock ({len(env.packages())} packages, {env.digest[:19]}…)")
            continue
        drifted += 1
        print(f"{name}: differs from {env.lock_path}:")
        if stale:
            print(
                f"  built from lock {built.digest[:19]}…, the lock is now {env.digest[:19]}…: "
                f"rebuild with `shipyard env build {name}`"
            )
        for line in drift.lines():
            print(f"  {line}")
        if drift:
            print(
                f"  {len(drift.lines())} difference(s); `shipyard env build --force {name}` "
                "makes a clean build"
            )
    return 1 if drifted else 0


#: The data dir to read from; unlike `up`, reading never creates it (``shipyard users``
#: imports it by this name).
_data_dir = data_dir_of


def cmd_credentials(args: argparse.Namespace) -> int:
    path = _data_dir(args) / "credentials.json"
    if not path.exists():
        raise CLIError(f"No credentials in {path.parent} yet: `shipyard up` creates them.")
    try:
        creds = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CLIError(
            f"Cannot read {path}: {e}. Delete it and run `shipyard up` to make new ones."
        ) from None
    # the admin's first password; an admin who changed it since uses their own.
    # (A shared user password of an older version, if the file still has one, opens
    # nothing any more and is not shown.)
    for key in ("admin_user", "admin_password"):
        print(f"{key:15} {creds.get(key, '?')}")
    return 0


# ---------------------------------------------------------------- profiles


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    environments = list(list_environments(Path(args.images) if args.images else None))
    if not environments:
        print(
            "warning: no images/ folder found, so environment names are not checked "
            "(pass --images DIR)",
            file=sys.stderr,
        )
    for name in args.files:
        try:
            config = load_profiles(name, environments=environments or None)
        except ProfilesInvalid as e:
            failed += 1
            print(str(e), file=sys.stderr)
            print(f"{name}: {len(e.errors)} error(s)", file=sys.stderr)
            continue
        print(
            f"{name}: OK, {len(config.profiles)} profile(s): {', '.join(p.slug for p in config.profiles)}"
        )
    return 1 if failed else 0


def _load(file: str | None):
    try:
        return load_profiles(file or default_profiles_file())
    except ProfilesInvalid as e:
        raise CLIError(f"The profiles file has errors:\n{e}") from None


def cmd_export(args: argparse.Namespace) -> int:
    config = _load(args.file)
    values = z2jh_values(config, args.image_template)
    sys.stdout.write(
        "# Zero to JupyterHub values generated by `shipyard profiles export --format z2jh`.\n"
        "# Group restrictions and quotas are not part of profileList: use\n"
        "# hub.config.JupyterHub.spawner_class: shipyard-kubernetes to enforce them.\n"
    )
    yaml.safe_dump(values, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


def _hub_get(api_url: str, token: str, path: str):
    request = urllib.request.Request(
        api_url.rstrip("/") + path, headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - admin-given URL
            body = response.read()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise CLIError(
                f"The hub refused the token ({e.code}). Use the token `shipyard up` created "
                "(.shipyard/cli-token) or pass --token with read:servers and admin:server_state."
            ) from None
        raise CLIError(f"The hub answered {e.code} for {path}: {e.reason}") from None
    except urllib.error.URLError as e:
        raise CLIError(f"Cannot reach the hub at {api_url}: {e.reason}. Is it running?") from None
    except (OSError, http.client.HTTPException) as e:
        # a hub or proxy that hangs up or stalls after the connection was made
        raise CLIError(f"Cannot reach the hub at {api_url}: {e!r}. Is it running?") from None
    try:
        return json.loads(body)
    except ValueError:
        raise CLIError(
            f"{api_url}{path} did not answer JSON: is {api_url} the hub's API URL "
            "(it ends in /hub/api)?"
        ) from None


def _server_usage(server: dict, config) -> tuple[str, Usage]:
    """The profile slug and resources of one server model from the hub's REST API.

    The profile recorded in the spawner state at spawn time is authoritative;
    a server with no state (another spawner) falls back to its user_options.
    """
    recorded = (server.get("state") or {}).get("profile")
    if recorded:
        profile = Profile.model_validate(recorded)
        return profile.slug, Usage.of(profile)
    slug = (server.get("user_options") or {}).get("profile")
    profile = config.get(slug) if isinstance(slug, str) else None
    return (slug or "?"), (Usage.of(profile) if profile else Usage())


def cmd_usage(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        token_file = _data_dir(args) / "cli-token"
        if not token_file.exists():
            raise CLIError(
                f"No token for the hub: there is no {token_file.name} in {token_file.parent}. "
                "On the hub's machine run this as the user who ran `shipyard up`, where it "
                "ran or with its data dir in --data-dir or $SHIPYARD_DATA_DIR; elsewhere set "
                "JUPYTERHUB_API_TOKEN or pass --token with an admin's hub API token."
            )
        token = token_file.read_text().strip()
    api_url = args.hub_api_url or hub_api_url()
    config = _load(args.file)
    users = _hub_get(api_url, token, "/users?state=active")
    rows = []
    for user in users:
        total = Usage()
        servers = (user.get("servers") or {}).items()
        for name, server in servers:
            slug, usage = _server_usage(server, config)
            total = Usage(total.cpu + usage.cpu, total.memory + usage.memory, total.gpu + usage.gpu)
            rows.append((user["name"], name or "(default)", slug, usage))
        quota = config.quota_for(user.get("groups", []))
        if len(servers) > 1 or (servers and quota):
            limit = "∞" if quota is None or quota.max_servers is None else quota.max_servers
            rows.append((user["name"], "= total", f"{len(servers)} of {limit} servers", total))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "user": u,
                        "server": s,
                        "profile": p,
                        "cpu": x.cpu,
                        "memory": x.memory,
                        "gpu": x.gpu,
                    }
                    for u, s, p, x in rows
                ],
                indent=2,
            )
        )
        return 0
    if not rows:
        print("No servers are running.")
        return 0
    print(f"{'USER':20} {'SERVER':14} {'PROFILE':22} {'CPU':>6} {'MEMORY':>10} {'GPU':>4}")
    for user, server, slug, usage in rows:
        print(
            f"{user[:20]:20} {server[:14]:14} {slug[:22]:22} {format_cpu(usage.cpu):>6} "
            f"{format_memory(usage.memory):>10} {usage.gpu:>4}"
        )
    return 0


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    url = hub_url()  # $SHIPYARD_BIND_URL: the hub these commands talk to, and `up` starts
    parser = argparse.ArgumentParser(
        prog="shipyard",
        description=f"Shipyard: a data-science platform on JupyterHub. The hub: {url} "
        "($SHIPYARD_BIND_URL).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help=f"start the embedded platform (JupyterHub on {url})")
    up.add_argument("--data-dir", help="where the hub keeps its state (default: ./.shipyard)")
    up.add_argument("--bind-url", help=f"public URL of the hub (default: {url})")
    up.add_argument("--profiles", help="profiles file (default: config/profiles.yaml)")
    up.add_argument(
        "--config", help="jupyterhub_config.py to use (default: config/jupyterhub_config.py)"
    )
    up.add_argument(
        "--envs-dir",
        help="where environments are built (default: /opt/<instance>/envs as root)",
    )
    up.add_argument(
        "--instance",
        help="this Shipyard's name on the machine, for a second one beside the first "
        "(default: $SHIPYARD_INSTANCE, else shipyard): its cgroups, system accounts and "
        "folders derive from it; give it its own --data-dir and ports",
    )
    up.add_argument(
        "--placement",
        choices=PLACEMENTS,
        help="how users' servers, runs and models run here: process (default; "
        "$SHIPYARD_PLACEMENT) or container (podman, from the environments' images, made if "
        "missing)",
    )
    up.set_defaults(func=cmd_up)

    creds = sub.add_parser("credentials", help="show the generated admin credentials")
    creds.add_argument("--data-dir", help="the data dir `shipyard up` used")
    creds.set_defaults(func=cmd_credentials)

    profiles = sub.add_parser("profiles", help="validate, export and inspect resource profiles")
    psub = profiles.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")

    validate = psub.add_parser("validate", help="check profiles files; every error with file:line")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--images", help="the images/ folder whose environments profiles may name"
    )
    validate.set_defaults(func=cmd_validate)

    export = psub.add_parser("export", help="print the profiles in another format")
    export.add_argument(
        "--format", choices=["z2jh"], required=True, help="z2jh: Zero to JupyterHub values"
    )
    export.add_argument("--file", help="profiles file (default: the hub's)")
    export.add_argument(
        "--image-template",
        default=None,
        help="image of each profile's environment, e.g. registry.example.org/shipyard-{environment}:2026.11",
    )
    export.set_defaults(func=cmd_export)

    usage = psub.add_parser("usage", help="running servers, their profiles and quota use")
    usage.add_argument("--file", help="profiles file (default: the hub's)")
    usage.add_argument(
        "--hub-api-url", help="hub API URL (default: $JUPYTERHUB_API_URL or the local hub)"
    )
    usage.add_argument(
        "--token", help="hub API token (default: $JUPYTERHUB_API_TOKEN or .shipyard/cli-token)"
    )
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(func=cmd_usage)

    env = sub.add_parser("env", help="build and check the standard environments of images/")
    esub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    listing = esub.add_parser("list", help="the environments, their locks and builds")
    listing.set_defaults(func=cmd_env_list)
    build = esub.add_parser("build", help="build environments from their locks")
    build.add_argument("envs", nargs="+", metavar="ENV")
    build.add_argument(
        "--force", action="store_true", help="build again even if the lock is unchanged"
    )
    build.add_argument(
        "--installer",
        choices=["auto", "uv", "pip"],
        default="auto",
        help="auto: uv when installed, else pip",
    )
    build.add_argument("--python", help="interpreter to base it on (its X.Y must match the lock)")
    build.set_defaults(func=cmd_env_build)
    check = esub.add_parser("check", help="list every difference from the lock; exit 1 on drift")
    check.add_argument("envs", nargs="+", metavar="ENV")
    check.set_defaults(func=cmd_env_check)

    images_cli.add_parser(sub)
    jobs_cli.add_parser(sub)
    pipelines_cli.add_parser(sub)
    models_cli.add_parser(sub)
    users_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    secrets_cli.add_parser(sub)
    usage_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CLIError as e:
        print(f"shipyard: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `shipyard profiles export | head`
        sys.stderr.close()
        return 0
