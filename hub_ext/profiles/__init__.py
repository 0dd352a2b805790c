"""Resource profiles: the one source of truth for environments and limits.

- :mod:`.model`: the typed profiles, their file's loader with ``file:line`` errors,
  and the live store that re-reads it;
- :mod:`.z2jh`: the same profiles as KubeSpawner's ``profile_list`` and Zero to
  JupyterHub's values;
- :mod:`.quantities`: CPU and memory quantities, parsed and formatted.

A leaf: it imports nothing else of Shipyard, so every part (spawners, services,
the CLI) may use it (checked by import-linter, ``pyproject.toml``).
"""
