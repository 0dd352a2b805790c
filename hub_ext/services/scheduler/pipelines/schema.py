"""The JSON schema of ``pipeline.yaml``, generated from :class:`~.spec.Pipeline`.

Editors check a pipeline file as it is typed with this schema (see :mod:`.load`
for the ``# yaml-language-server: $schema=...`` line). It is generated, never
written by hand (STYLE rule 18), and a copy is checked in beside this module
(``pipeline.schema.json``) so editors and other tools can point at a file;
tests/test_pipeline_spec.py fails when the copy differs from what the models
generate. After changing the models, write it again with::

    python -m hub_ext.services.scheduler.pipelines.schema

The schema is in validation mode (what a file may say, with its defaults) and
says every rule a JSON schema can (patterns, bounds, enums, unknown fields);
duplicate keys, the graph and the notebooks are checked by :mod:`.load` only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .spec import Pipeline

#: The schema's identifier: a name, not a location to fetch it from.
SCHEMA_ID = "urn:shipyard:scheduler:pipeline"
#: The checked-in copy.
SCHEMA_PATH = Path(__file__).with_name("pipeline.schema.json")


def pipeline_schema() -> dict[str, Any]:
    """Return the JSON schema (draft 2020-12) of a pipeline file."""
    schema = Pipeline.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "description": "A Shipyard pipeline (pipeline.yaml): notebook steps run in the order "
        "their needs give, with the values and files they hand on.",
    }


def schema_text() -> str:
    """Return the schema as the checked-in file holds it (sorted keys, two-space indents)."""
    return json.dumps(pipeline_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Write :data:`SCHEMA_PATH` from the models."""
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")


if __name__ == "__main__":
    main()
