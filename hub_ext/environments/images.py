"""The environments as container images, built on this machine (``shipyard image``).

An environment (``images/<env>/``) is one lock used two ways: a virtual environment
on one machine (:mod:`.build`) and an image (its ``Dockerfile``). This module builds
the image with podman, so that the image Kubernetes runs can be built, run and checked
on any machine that has podman, registry or not:

``shipyard image base``
    A base image made from the distribution's own packages: ``debootstrap`` of a
    minimal Debian (Python 3, venv, CA certificates) imported into podman as
    :data:`BASE_TAG`. For a machine that cannot pull ``python:3.11-slim`` from a
    public registry but can reach Debian's mirror. The host's own certificate
    authorities (``/usr/local/share/ca-certificates``, Debian's place for local ones)
    are trusted inside it too, so a build behind a TLS-inspecting proxy can reach
    PyPI as the host does; ``--no-host-ca`` leaves them out. The image carries its
    recipe in a label, and the command does nothing when an image of the same
    recipe exists (``--force`` makes it again).
``shipyard image build ENV``
    ``podman build`` of ``images/ENV/Dockerfile``, given ``LOCK_DIGEST`` (the
    Dockerfile checks the lock against it), ``REVISION`` (the checkout's commit) and,
    when the Dockerfile takes one, ``BASE_IMAGE``: the image named by ``--base``, else
    the local base when ``shipyard image base`` made one, else the Dockerfile's public
    default. The context holds only the lock and Shipyard's wheel (what the
    Dockerfile copies), so a build never sends the checkout; podman's layer cache
    makes a rebuild of an unchanged lock take seconds. The image is tagged
    ``localhost/shipyard-ENV:<first 12 of the lock digest>`` and the build is refused
    afterwards unless its ``io.shipyard.lock-digest`` label is the lock's digest.

Rejected alternative: building the image from the local virtual environment (copying
``~/.shipyard/envs/<env>`` into a container): the image would then carry whatever the
host's Python links against, which is the difference containers are for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hub_ext.environments.catalog import LOCK_NAME, Environment, EnvironmentProblem, _repo_root
from hub_ext.host.podman import PodmanMissing, limit_options, podman

#: The image ``shipyard image base`` makes, and ``shipyard image build`` uses when present.
BASE_TAG = "localhost/shipyard-debian:bookworm"
#: Debian's release for the base: the one the public ``python:3.11-slim-bookworm`` is on.
BASE_SUITE = "bookworm"
#: Where debootstrap fetches from unless ``--mirror`` says otherwise.
BASE_MIRROR = "http://deb.debian.org/debian"
#: What the base holds beyond Debian's minimal system: what the Dockerfiles' first
#: ``RUN`` uses (``python -m venv``, ``useradd``, TLS to PyPI).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd")
#: Where Debian keeps the certificate authorities an administrator added.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
#: The label with which the base records how it was made.
RECIPE_LABEL = "io.shipyard.base-recipe"
#: The label every environment image carries with its lock's digest.
DIGEST_LABEL = "io.shipyard.lock-digest"

#: Called with one line of progress at a time.
Say = Callable[[str], None]


class ImageProblem(EnvironmentProblem):
    """An image could not be made: the message says why and what to do."""


@dataclass(frozen=True)
class BuiltImage:
    """An environment's image as podman has it."""

    environment: str
    tag: str
    image_id: str
    digest: str
    seconds: float = 0.0
    reused: bool = False


def image_tag(env: Environment) -> str:
    """``localhost/shipyard-<env>:<12 hex of the lock digest>``: a new lock is a new tag."""
    return f"localhost/shipyard-{env.name}:{env.digest.removeprefix('sha256:')[:12]}"


def _podman() -> list[str]:
    try:
        return podman()
    except PodmanMissing as e:
        raise ImageProblem(str(e)) from None


def _inspect(image: str) -> dict | None:
    """``podman image inspect`` of a local image; None when there is no such image."""
    out = subprocess.run(
        [*_podman(), "image", "inspect", image, "--format", "json"],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return None
    try:
        return json.loads(out.stdout)[0]
    except (ValueError, IndexError):
        return None


def _labels(found: dict) -> dict[str, str]:
    """The labels of an inspected image (podman puts them at the top and in ``Config``)."""
    return found.get("Labels") or (found.get("Config") or {}).get("Labels") or {}


def _label(image: str, label: str) -> str | None:
    """``label`` of a local image; None when there is no such image (or label)."""
    found = _inspect(image)
    return _labels(found).get(label) if found is not None else None


def image_exists(image: str) -> bool:
    """Whether podman has ``image`` locally."""
    return subprocess.run([*_podman(), "image", "exists", image]).returncode == 0


def _stream(argv: list[str], say: Say, keep: Callable[[str], bool], what: str, **kw) -> None:
    """Run ``argv``, passing the lines ``keep`` accepts to ``say``; raise with the tail."""
    tail: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, **kw
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail[-39:], line]
            if keep(line):
                say(line)
    if proc.returncode:
        shown = "\n".join(f"    {line}" for line in tail)
        raise ImageProblem(f"{what} failed (exit {proc.returncode}); its last lines:\n{shown}")


# ------------------------------------------------------------------ the base


def _host_cas() -> list[Path]:
    return sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []


def base_recipe(suite: str, mirror: str, packages: Iterable[str], cas: Iterable[Path]) -> str:
    """A digest of what makes the base: the same recipe is the same image."""
    h = hashlib.sha256(f"{suite}\0{mirror}\0{','.join(sorted(packages))}\0".encode())
    for ca in cas:
        h.update(ca.name.encode() + b"\0" + ca.read_bytes())
    return "sha256:" + h.hexdigest()


def build_base(
    tag: str = BASE_TAG,
    suite: str = BASE_SUITE,
    mirror: str = BASE_MIRROR,
    host_ca: bool = True,
    force: bool = False,
    say: Say = print,
) -> str:
    """Make the base image from Debian's packages (module docstring); return its tag.

    Needs root (debootstrap builds a root filesystem with device nodes and owners).
    """
    cas = _host_cas() if host_ca else []
    recipe = base_recipe(suite, mirror, BASE_PACKAGES, cas)
    if not force and _label(tag, RECIPE_LABEL) == recipe:
        say(f"{tag} is up to date (same suite, mirror, packages and certificates).")
        return tag
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise ImageProblem(
            "debootstrap is not installed: `apt-get install debootstrap` (it makes the base "
            "from Debian's packages)."
        )
    if os.geteuid() != 0:
        raise ImageProblem("Making the base needs root: debootstrap creates a root filesystem.")
    command = _podman()
    # /var/tmp: the root filesystem is ~275 MB and /tmp may be a small tmpfs
    with tempfile.TemporaryDirectory(prefix="shipyard-base-", dir="/var/tmp") as scratch:
        root = Path(scratch) / "root"
        say(f"[1/3] debootstrap {suite} from {mirror} (a few minutes; one line per package)")
        _stream(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                suite,
                str(root),
                mirror,
            ],
            say,
            keep=lambda line: line.startswith(("I: Retrieving", "I: Base system", "E:", "W:")),
            what="debootstrap",
        )
        say(f"[2/3] certificate authorities of this host: {len(cas)}")
        if cas:
            target = root / HOST_CA_DIR.relative_to("/")
            target.mkdir(parents=True, exist_ok=True)
            for ca in cas:
                shutil.copy2(ca, target / ca.name)
            _stream(
                ["chroot", str(root), "update-ca-certificates"],
                say,
                keep=lambda line: False,
                what="update-ca-certificates in the base",
            )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        say(f"[3/3] importing into podman as {tag}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                *command,
                "import",
                "--change",
                'CMD ["/bin/bash"]',
                "--change",
                f"LABEL {RECIPE_LABEL}={recipe}",
                "--change",
                f"LABEL org.opencontainers.image.description=Debian {suite} with Python 3",
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imported.returncode or tar.returncode:
            raise ImageProblem(f"podman import failed: {imported.stderr.strip()[-2000:]}")
    say(f"{tag}: made from Debian {suite}")
    return tag


# ------------------------------------------------------------ environment images


def takes_base(dockerfile: Path) -> bool:
    """Whether the Dockerfile declares ``ARG BASE_IMAGE`` (the gpu image has its own base)."""
    return any(
        line.split()[:2] == ["ARG", "BASE_IMAGE"] or line.startswith("ARG BASE_IMAGE=")
        for line in dockerfile.read_text().splitlines()
    )


def choose_base(env: Environment, base: str) -> str | None:
    """The ``BASE_IMAGE`` to build ``env`` on; None for the Dockerfile's own default.

    ``base`` is an image name, ``"public"`` (the Dockerfile's default) or ``"auto"``
    (the local base when ``shipyard image base`` made one, else the default).
    """
    if not takes_base(env.dockerfile):
        if base not in ("auto", "public"):
            raise ImageProblem(
                f"images/{env.name}/Dockerfile chooses its own base (it has no ARG BASE_IMAGE); "
                "leave out --base."
            )
        return None
    if base == "public":
        return None
    if base == "auto":
        return BASE_TAG if image_exists(BASE_TAG) else None
    return base


def _git(source: Path | None, *args: str) -> str:
    """What ``git`` says in the checkout ``source`` (empty outside one)."""
    if source is None or not shutil.which("git"):
        return ""
    out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def _build_progress(line: str) -> bool:
    """Whether a line of ``podman build`` tells the user where it is.

    Its steps, the cache it reuses and pip's one line per package it fetches: a lock's
    install is one step of minutes, which would otherwise show nothing at all.
    """
    return line.startswith(("STEP ", "--> Using cache", "COMMIT", "Collecting ", "Successfully"))


def _public_url(url: str) -> str:
    """``url`` without a user or password (an image label is readable by anyone who pulls it)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}" if sep else url


def build_image(
    env: Environment,
    wheel: Path,
    base: str = "auto",
    tag: str | None = None,
    say: Say = print,
    verbose: bool = False,
) -> BuiltImage:
    """``podman build`` of ``env``'s Dockerfile with Shipyard's ``wheel`` (module docstring)."""
    started = time.monotonic()
    command = _podman()
    tag = tag or image_tag(env)
    digest = env.digest
    chosen = choose_base(env, base)
    if chosen and not image_exists(chosen) and chosen == BASE_TAG:
        raise ImageProblem(f"No base image {chosen}: make it with `shipyard image base`.")
    with tempfile.TemporaryDirectory(prefix="shipyard-image-", dir="/var/tmp") as scratch:
        context = Path(scratch)
        lock = context / "images" / env.name / LOCK_NAME
        lock.parent.mkdir(parents=True)
        lock.write_bytes(env.lock_bytes())
        (context / "dist").mkdir()
        shutil.copy2(wheel, context / "dist" / wheel.name)
        argv = [
            *command,
            "build",
            "--format",
            "docker",  # the OCI format drops SHELL, and the Dockerfiles use pipefail
            *limit_options(),
            "--file",
            str(env.dockerfile),
            "--build-arg",
            f"LOCK_DIGEST={digest}",
            "--build-arg",
            f"REVISION={_git(_repo_root(), 'rev-parse', 'HEAD') or 'unknown'}",
            "--build-arg",
            f"SOURCE={_public_url(_git(_repo_root(), 'remote', 'get-url', 'origin')) or 'local'}",
            "--tag",
            tag,
        ]
        if chosen:
            argv += ["--build-arg", f"BASE_IMAGE={chosen}"]
        argv.append(str(context))
        say(f"podman build {env.name} on {chosen or 'the Dockerfile default base'} -> {tag}")
        _stream(
            argv,
            say,
            keep=lambda line: verbose or _build_progress(line),
            what=f"podman build of {env.name}",
        )
    # one inspect gives both the lock digest the image carries and its id
    built = _inspect(tag) or {}
    found = _labels(built).get(DIGEST_LABEL)
    if found != digest:
        raise ImageProblem(
            f"{tag} carries lock digest {found!r}, not {digest}: the build did not use this lock."
        )
    return BuiltImage(
        environment=env.name,
        tag=tag,
        image_id=str(built.get("Id", ""))[:12],
        digest=digest,
        seconds=time.monotonic() - started,
    )


def list_images() -> list[dict[str, str]]:
    """Every environment image podman has: environment, tag, lock digest, created, size."""
    out = subprocess.run(
        [
            *_podman(),
            "images",
            "--filter",
            f"label={DIGEST_LABEL}",
            "--filter",
            "dangling=false",  # not the layers a build leaves untagged
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise ImageProblem(f"podman images failed: {out.stderr.strip()}")
    rows = []
    for image in json.loads(out.stdout or "[]"):
        labels = image.get("Labels") or {}
        for name in image.get("Names") or ["<none>"]:
            rows.append(
                {
                    "environment": labels.get("io.shipyard.environment", "?"),
                    "tag": name,
                    "digest": labels.get(DIGEST_LABEL, ""),
                    "created": str(image.get("CreatedAt", "")),
                    "size": f"{int(image.get('Size', 0)) / 1e6:.0f} MB",
                }
            )
    return rows
