"""Kubernetes manifests in tests: checked against the newest schema kubernetes-validate ships."""

from __future__ import annotations

import kubernetes_validate


def validated(manifest: dict) -> dict:
    """``manifest``, once it validates strictly (unknown fields are errors) against the newest
    Kubernetes schema kubernetes-validate ships; raises its ValidationError otherwise."""
    kubernetes_validate.validate(
        manifest, desired_version=kubernetes_validate.latest_version(), strict=True
    )
    return manifest
