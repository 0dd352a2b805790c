"""The environments as images on this machine: ``shipyard image base|build|list`` with podman.

The real tools run: debootstrap makes the base from Debian's packages, ``podman build``
builds images/base/Dockerfile on it, and the image is run. The base and the image are
kept between runs, as the environments' builds are (:data:`tests.conftest.TEST_ENVS_DIR`):
``shipyard image base`` does nothing when the recipe is unchanged and podman's layer cache
makes a rebuild of an unchanged lock take seconds; the first run on a machine takes about
3 minutes for the base and 2 to 4 for the image.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from hub_ext.environments import images
from hub_ext.environments.catalog import get_environment
from hub_ext.host.podman import MAX_NPROC, limit_options

from .containertools import shipyard
from .hubtools import REPO


def run_in(image: str, *command: str, user: str = "") -> subprocess.CompletedProcess:
    as_user = ["--user", user] if user else []
    return subprocess.run(
        ["podman", "run", "--rm", *limit_options(), *as_user, image, *command],
        capture_output=True,
        text=True,
        timeout=120,
    )


#: Every installed distribution as ``name==version``: the same question asked of both
#: interpreters (the local environment is built by uv and has no pip to ask).
INSTALLED = (
    "import importlib.metadata as m; "
    "print('\\n'.join(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()))"
)


def freeze(lines: str) -> dict[str, str]:
    """``name==version`` lines as {name: version}, without Shipyard itself."""
    found = {}
    for line in lines.splitlines():
        name, sep, version = line.partition("==")
        if sep and name.lower() != "shipyard":
            found[name.lower().replace("_", "-")] = version
    return found


# ------------------------------------------------------------------ pure parts


def test_limit_options_stay_within_what_this_host_allows():
    options = limit_options()
    values = dict(o.split("=", 1) for o in options[1::2])
    files_soft, files_hard = map(int, values["nofile"].split(":"))
    procs_soft, procs_hard = map(int, values["nproc"].split(":"))
    host_soft, host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert files_soft <= files_hard
    assert host_hard == resource.RLIM_INFINITY or files_hard <= host_hard
    assert procs_soft <= procs_hard <= MAX_NPROC


def test_an_image_label_never_carries_a_remote_password():
    assert images._public_url("https://me:s3cret@git.example.org/x/y.git") == (
        "https://git.example.org/x/y.git"
    )
    assert images._public_url("git@github.com:x/y.git") == "git@github.com:x/y.git"
    assert images._public_url("") == ""


def test_the_tag_follows_the_lock_and_only_dockerfiles_with_a_base_argument_take_one():
    base = get_environment("base")
    assert images.image_tag(base) == f"localhost/shipyard-base:{base.digest[7:19]}"
    assert images.choose_base(base, "public") is None
    assert images.choose_base(base, "registry.example.org/python:3.11") == (
        "registry.example.org/python:3.11"
    )
    gpu = get_environment("gpu")  # on NVIDIA's CUDA image: no ARG BASE_IMAGE
    assert images.choose_base(gpu, "auto") is None
    with pytest.raises(images.ImageProblem, match="chooses its own base"):
        images.choose_base(gpu, "localhost/shipyard-debian:bookworm")


def test_the_recipe_changes_with_what_makes_the_base(tmp_path):
    ca = tmp_path / "corp.crt"
    ca.write_text("one")
    first = images.base_recipe("bookworm", images.BASE_MIRROR, images.BASE_PACKAGES, [ca])
    assert first == images.base_recipe("bookworm", images.BASE_MIRROR, images.BASE_PACKAGES, [ca])
    ca.write_text("two")
    assert first != images.base_recipe("bookworm", images.BASE_MIRROR, images.BASE_PACKAGES, [ca])
    assert first != images.base_recipe("trixie", images.BASE_MIRROR, images.BASE_PACKAGES, [])


@pytest.mark.parametrize(
    "args, message",
    [
        (("image", "build", "nosuch"), "No environment 'nosuch'"),
        (("image", "build", "base", "datascience", "--tag", "x:1"), "--tag names one image"),
        (("image", "build", "gpu", "--base", "x:1"), "chooses its own base"),
    ],
)
def test_bad_image_commands_say_what_to_fix_without_a_traceback(args, message):
    out = shipyard(*args, timeout=120)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


# ------------------------------------------------------------------ real builds


@pytest.fixture(scope="module")
def base_image() -> str:
    """``shipyard image base``: made once per machine, reused while its recipe holds."""
    out = shipyard("image", "base")
    assert out.returncode == 0, out.stdout + out.stderr
    assert images.image_exists(images.BASE_TAG)
    return images.BASE_TAG


@pytest.fixture(scope="module")
def base_env_image(base_image) -> str:
    out = shipyard("image", "build", "base")
    assert out.returncode == 0, out.stdout + out.stderr
    tag = images.image_tag(get_environment("base"))
    image_id = subprocess.run(
        ["podman", "image", "inspect", tag, "--format", "{{.Id}}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert image_id and f"{tag} ({image_id[:12]})" in out.stdout, out.stdout
    assert "STEP 1/" in out.stdout, "the build shows its steps as it goes"
    return tag


def test_the_base_is_debian_with_python_and_is_not_made_twice(base_image):
    again = shipyard("image", "base", timeout=120)
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stdout + again.stderr
    out = run_in(base_image, "python", "-c", "import sys, venv; print(sys.version_info[:2])")
    assert out.returncode == 0 and out.stdout.strip() == "(3, 11)", out.stdout + out.stderr


def test_the_image_carries_its_lock_and_runs_as_jovyan(base_env_image):
    env = get_environment("base")
    assert images._label(base_env_image, images.DIGEST_LABEL) == env.digest
    out = run_in(base_env_image, "sh", "-c", 'id -u; id -g; echo "$SHIPYARD_ENV_DIGEST"; pwd')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1000", "100", env.digest, "/home/jovyan"]
    listed = shipyard("image", "list", "--json", timeout=120)
    rows = json.loads(listed.stdout)
    assert {"environment": "base", "tag": base_env_image, "digest": env.digest}.items() <= next(
        r for r in rows if r["tag"] == base_env_image
    ).items()


def test_the_same_lock_gives_the_same_packages_in_the_image_and_the_local_environment(
    base_env_image, base_env
):
    inside = run_in(base_env_image, "python", "-c", INSTALLED)
    assert inside.returncode == 0, inside.stderr
    local = subprocess.run(
        [str(base_env.python), "-c", INSTALLED],
        capture_output=True,
        text=True,
        check=True,
    )
    image_packages, local_packages = freeze(inside.stdout), freeze(local.stdout)
    assert len(local_packages) > 100
    # pip, setuptools: what venv (not the lock) puts in; uv's venv has none
    for tool in ("pip", "setuptools", "wheel"):
        image_packages.pop(tool, None)
        local_packages.pop(tool, None)
    assert image_packages == local_packages
    assert base_env.digest == get_environment("base").digest


def test_env_check_inside_the_image_checks_the_image_against_its_lock(base_env_image):
    out = run_in(base_env_image, "shipyard", "env", "check", "base")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "base: matches its lock" in out.stdout
    # a package removed inside the container is drift, found and named
    out = run_in(
        base_env_image,
        "sh",
        "-c",
        "pip uninstall --yes --quiet six >/dev/null 2>&1; shipyard env check base",
        user="0",  # the environment is root's in the image, as in the Dockerfile
    )
    assert out.returncode == 1 and "six" in out.stdout, out.stdout + out.stderr


def test_a_rebuild_of_an_unchanged_lock_uses_the_layer_cache(base_env_image):
    out = shipyard("image", "build", "base", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Using cache" in out.stdout, out.stdout
    assert images._label(base_env_image, images.DIGEST_LABEL) == get_environment("base").digest


def test_a_build_on_a_base_that_is_not_there_fails_with_podman_s_own_words():
    out = shipyard("image", "build", "base", "--base", "localhost/shipyard-no-such-base:1")
    assert out.returncode != 0
    assert "podman build of base failed" in out.stderr, out.stderr
    assert "no-such-base" in out.stderr and "Traceback" not in out.stderr, out.stderr


# ------------------------------------------------------------------ shipyard up


def test_up_refuses_an_unknown_placement_before_starting_anything(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", "up"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, SHIPYARD_PLACEMENT="vm", SHIPYARD_DATA_DIR=str(tmp_path / "d")),
    )
    assert out.returncode == 1
    assert "SHIPYARD_PLACEMENT='vm': use one of process, container" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "d").exists()
    out = shipyard("up", "--placement", "vm", timeout=60)
    assert out.returncode == 2 and "invalid choice: 'vm'" in out.stderr


def test_the_embedded_config_takes_the_placement_from_the_environment(tmp_path):
    probe = (
        "from traitlets.config import PyFileConfigLoader\n"
        f"config = PyFileConfigLoader('jupyterhub_config.py', path={str(REPO / 'config')!r})"
        ".load_config()\n"
        "print(config.LocalHost.get('placement', 'unset'))\n"
    )
    for given, expected in (("container", "container"), ("", "unset")):
        out = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=dict(os.environ, SHIPYARD_PLACEMENT=given, SHIPYARD_DATA_DIR=str(tmp_path)),
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == expected


def test_up_in_container_placement_keeps_the_images_that_exist(base_env_image, capsys):
    from hub_ext.cli.main import _build_profile_images
    from hub_ext.profiles.model import ProfilesConfig

    config = ProfilesConfig.model_validate(
        {
            "profiles": [
                {"slug": "small", "display_name": "Small", "environment": "base"},
                {"slug": "gpu", "display_name": "GPU", "environment": "gpu", "gpu": 1},
            ]
        }
    )
    _build_profile_images(config)
    said = capsys.readouterr().out
    assert f"Image of 'base': {base_env_image} (kept)" in said
    # no CDI spec declares a GPU here: no image for a GPU profile
    assert "'gpu'" not in said, "a GPU profile's image is made only where CDI has GPUs"
