"""Write the panel's wire types, src/api/generated/<service>.ts, from the services' OpenAPI documents.

The scheduler, the deployer, the audit, the usage and the alerts service each build their OpenAPI 3.1
document in Python from the pydantic models their handlers parse and answer
with (``hub_ext/services/<service>/openapi.py``, ``build_openapi``). This script
imports those builders (no service is started), writes each document to a
temporary folder, and runs openapi-typescript (a devDependency in
package.json, locked by yarn.lock) over each one, so the panel's types come
from the same models as the services' answers (STYLE rule 18).

Run it with the venv's Python from labextension/, after ``jlpm install``::

    jlpm gen:types                      # rewrites src/api/generated/
    python scripts/gen_types.py --out DIR   # writes them into DIR instead

tests/test_panel_types.py runs it into a temporary folder and fails when a
committed file differs from what it writes.

Only the services whose answers the panel reads (through the server extension's
forwarding routes) are generated; the secrets service has no route under
/shipyard/api/, so it has no file here: add it to :data:`SERVICES` when the
panel needs it.

Rejected alternatives: fetching the documents from running services (the
types would depend on a hub being up, and on its settings: the deployer writes
its ``max_replicas`` into its document); a Node script calling the builders
through Python anyway; openapi-typescript's redocly.yaml with fixed input
paths (it cannot write into the test's temporary folder).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import zoneinfo
from pathlib import Path

LABEXT = Path(__file__).resolve().parent.parent
REPO = LABEXT.parent
#: Where the committed files live.
GENERATED = LABEXT / "src" / "api" / "generated"
#: What regenerates them, as the header of each file and the test's failure say.
COMMAND = "cd labextension && jlpm gen:types"
#: Service name -> the module whose ``build_openapi(prefix)`` returns its document.
SERVICES = {
    "scheduler": "hub_ext.services.scheduler.openapi",
    "deployer": "hub_ext.services.deployer.openapi",
    "audit": "hub_ext.services.audit.openapi",
    "usage": "hub_ext.services.usage.openapi",
    "alerts": "hub_ext.services.alerts.openapi",
}

HEADER = """\
/**
 * GENERATED, DO NOT EDIT: the types of the {name} service's OpenAPI document
 * ({module}.build_openapi), written by openapi-typescript through
 * labextension/scripts/gen_types.py.
 *
 * Regenerate after changing the service's models: {command}
 * tests/test_panel_types.py fails while this file differs from what that writes.
 */
"""


def documents() -> dict[str, dict]:
    """Each service's OpenAPI document, as its service serves it under ``/services/<name>/``."""
    # The scheduler lists the IANA zones this machine knows as an enum (TIME_ZONES); with
    # only the tzdata package (locked, the same everywhere) they do not depend on the
    # machine's /usr/share/zoneinfo, which adds names such as "localtime".
    zoneinfo.reset_tzpath([])
    sys.path.insert(0, str(REPO))
    built = {}
    for name, module in SERVICES.items():
        try:
            build_openapi = importlib.import_module(module).build_openapi
        except ImportError as error:
            raise SystemExit(
                f"cannot import {module} ({error}): run this with the venv's Python "
                "(.venv/bin first on PATH, as for jlpm)"
            ) from error
        built[name] = build_openapi(f"/services/{name}/")
    return built


def openapi_typescript() -> Path:
    """The locked openapi-typescript's command line, installed by ``jlpm install``."""
    cli = LABEXT / "node_modules" / "openapi-typescript" / "bin" / "cli.js"
    if not cli.is_file():
        raise SystemExit(f"{cli} is missing: run `jlpm install` in {LABEXT}")
    return cli


def generate(out: Path) -> list[Path]:
    """Write ``<service>.ts`` for each service into ``out``; return the files written."""
    cli = openapi_typescript()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="shipyard-openapi-") as tmp:
        for name, document in documents().items():
            source = Path(tmp, f"{name}.json")
            source.write_text(json.dumps(document, indent=1))
            typed = Path(tmp, f"{name}.ts")
            proc = subprocess.run(  # noqa: S603 - fixed argv
                ["node", str(cli), str(source), "--output", str(typed)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"openapi-typescript failed on {name}:\n{proc.stderr}")
            header = HEADER.format(name=name, module=SERVICES[name], command=COMMAND)
            target = out / f"{name}.ts"
            target.write_text(header + typed.read_text())
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=GENERATED,
        help=f"the folder to write into (default: {GENERATED.relative_to(REPO)})",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
