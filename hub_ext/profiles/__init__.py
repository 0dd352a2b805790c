"""Resource profiles: the one source of truth for environments and limits.

- :mod:`.model`: the typed profiles and their rules;
- :mod:`.loader`: reading a profiles file, with every problem at its ``file:line``;
- :mod:`.store`: the live profiles, re-read when the file changes;
- :mod:`.z2jh`: the same profiles as KubeSpawner's ``profile_list`` and Zero to
  JupyterHub's values;
- :mod:`.quantities`: CPU and memory quantities, parsed and formatted.

A leaf: it imports nothing else of Shipyard, so every part (spawners, services,
the CLI) may use it (checked by import-linter, ``pyproject.toml``).
"""
