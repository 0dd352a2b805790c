"""``shipyard image base | build ENV... | list``: the environments as images, with podman.

What each command does and why is :mod:`hub_ext.environments.images`; this module is
the command line over it: progress as lines while debootstrap and ``podman build`` run,
and one line per problem (a :class:`~hub_ext.cli.common.CLIError`), never a traceback.
"""

from __future__ import annotations

import argparse
import json

from hub_ext.cli.common import CLIError
from hub_ext.environments.build import EnvironmentBuilder
from hub_ext.environments.catalog import EnvironmentProblem, get_environment
from hub_ext.environments.images import (
    BASE_MIRROR,
    BASE_SUITE,
    BASE_TAG,
    build_base,
    build_image,
    list_images,
)


def _say(line: str) -> None:
    print(f"  {line}", flush=True)


def cmd_image_base(args: argparse.Namespace) -> int:
    try:
        build_base(
            tag=args.tag,
            suite=args.suite,
            mirror=args.mirror,
            host_ca=not args.no_host_ca,
            force=args.force,
            say=_say,
        )
    except EnvironmentProblem as e:
        raise CLIError(str(e)) from None
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    if args.tag and len(args.envs) > 1:
        raise CLIError("--tag names one image: give one ENV with it.")
    try:
        envs = [get_environment(name) for name in args.envs]
        wheel = EnvironmentBuilder().shipyard_wheel()
        for env in envs:
            print(f"Image of environment {env.name!r}", flush=True)
            built = build_image(
                env, wheel, base=args.base, tag=args.tag, say=_say, verbose=args.verbose
            )
            print(
                f"{built.tag} ({built.image_id}), lock {built.digest[:19]}…, {built.seconds:.0f} s",
                flush=True,
            )
    except EnvironmentProblem as e:
        raise CLIError(str(e)) from None
    return 0


def cmd_image_list(args: argparse.Namespace) -> int:
    try:
        rows = list_images()
    except EnvironmentProblem as e:
        raise CLIError(str(e)) from None
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No environment images: build one with `shipyard image build ENV`.")
        return 0
    print(f"{'ENVIRONMENT':14} {'IMAGE':48} {'LOCK DIGEST':20} {'SIZE':>8}")
    for row in rows:
        print(
            f"{row['environment']:14} {row['tag'][:48]:48} {row['digest'][:19]:20} {row['size']:>8}"
        )
    return 0


def add_parser(subparsers) -> None:
    """Register ``shipyard image`` and its sub-commands on ``subparsers``."""
    image = subparsers.add_parser(
        "image", help="build the environments of images/ as container images (podman)"
    )
    isub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    base = isub.add_parser(
        "base",
        help=f"make a base image from Debian's packages ({BASE_TAG}), for machines "
        "without a container registry",
    )
    base.add_argument("--tag", default=BASE_TAG, help=f"the image's name (default {BASE_TAG})")
    base.add_argument("--suite", default=BASE_SUITE, help=f"Debian release (default {BASE_SUITE})")
    base.add_argument(
        "--mirror", default=BASE_MIRROR, help=f"Debian mirror (default {BASE_MIRROR})"
    )
    base.add_argument(
        "--no-host-ca",
        action="store_true",
        help="do not trust this host's /usr/local/share/ca-certificates inside the image",
    )
    base.add_argument("--force", action="store_true", help="make it again even if up to date")
    base.set_defaults(func=cmd_image_base)
    build = isub.add_parser("build", help="podman build of images/ENV/Dockerfile from its lock")
    build.add_argument("envs", nargs="+", metavar="ENV")
    build.add_argument(
        "--base",
        default="auto",
        help="the base image: an image name, 'public' (the Dockerfile's default) or 'auto' "
        f"({BASE_TAG} when `shipyard image base` made it, else the default)",
    )
    build.add_argument("--tag", help="the image's name (default localhost/shipyard-ENV:<digest>)")
    build.add_argument("--verbose", action="store_true", help="show all of podman's output")
    build.set_defaults(func=cmd_image_build)
    listing = isub.add_parser("list", help="the environment images podman has")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_image_list)
