"""Checks every service's OpenAPI document gets: its references resolve, its schemas are used."""

from __future__ import annotations

import json
import re
from typing import Any


def assert_references_resolve(spec: dict[str, Any]) -> set[str]:
    """Every ``$ref`` points at a non-empty schema in the document, and every schema is used.

    Returns
    -------
    set of str
        The references found, for checks of particular ones.
    """
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(spec)))
    for ref in refs:
        assert ref.startswith("#/"), f"{ref} points outside the document"
        node: Any = spec
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
        assert isinstance(node, dict) and node, f"{ref} resolves to nothing"
    schemas = spec.get("components", {}).get("schemas", {})
    unused = {f"#/components/schemas/{name}" for name in schemas} - refs
    assert not unused, f"schemas no path uses: {sorted(unused)}"
    return refs
