"""The one source of every name Shipyard derives from a hub username.

System accounts, home directories, cgroups, pods, and later jobs and
deployments are all named from :func:`server_slug`, which is built on
JupyterHub's own :func:`jupyterhub.slugs.safe_slug`:

- a username that is already a plain lowercase name (``alice``, ``bob2``) is
  kept as is, so admins recognise it;
- any other username (unicode, upper case, dashes, 100 characters, a leading
  dash) is reduced to ``[a-z0-9-]`` and suffixed with an 8-hex-digit hash of
  the *full* original name, so the result is stable and two users never share
  a slug;
- a safe slug never contains ``--``, so ``user--server`` for a named server
  can never equal another user's slug or another server's.

Rejected alternative: escaping (``escapism``, the old KubeSpawner scheme)
keeps names unique but makes them long and unreadable, and its output is not
a valid Linux account name.
"""

from __future__ import annotations

from jupyterhub.slugs import safe_slug

#: Linux limits account names to 32 characters (useradd, shadow-utils).
ACCOUNT_MAX_LENGTH = 32

#: Longest slug of one user or one server name. Two of them joined by ``--``
#: (62 characters) still fit a DNS label (63), as Kubernetes object names need.
SLUG_MAX_LENGTH = 30


def user_slug(username: str, max_length: int = SLUG_MAX_LENGTH) -> str:
    """Return the stable, collision-free slug of one hub username."""
    return safe_slug(username, max_length=max_length)


def server_slug(username: str, server_name: str = "") -> str:
    """Return the slug of a user's server: ``user`` or ``user--server``.

    This names cgroups, pods, GPU reservations and anything else that exists
    once per server rather than once per user.
    """
    slug = user_slug(username)
    if server_name:
        slug = f"{slug}--{user_slug(server_name)}"
    return slug


def account_name(username: str, prefix: str = "jupyter-") -> str:
    """Return the system account that runs ``username``'s servers.

    The prefix keeps hub users apart from the host's own accounts (a hub user
    called ``root`` becomes ``jupyter-root``), as The Littlest JupyterHub does.
    The result always fits Linux's 32-character limit.
    """
    room = ACCOUNT_MAX_LENGTH - len(prefix)
    if room < 10:
        raise ValueError(
            f"System account prefix {prefix!r} is too long: it must leave at least "
            f"10 of the {ACCOUNT_MAX_LENGTH} characters Linux allows for the name."
        )
    return prefix + user_slug(username, max_length=room)
