"""The usage service: what each server, run, pipeline step and model replica used, and its cost.

See :mod:`.app` and docs/observability.md.
"""
