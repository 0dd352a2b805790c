"""Bench hub config: the test hub config (tests/hub_config.py), plus one stock-spawner setting.

JupyterHub's SimpleLocalProcessSpawner runs every server as the hub's own user,
which is root here, and jupyter-server refuses to start as root without
``--allow-root``. The flag changes nothing else, and LocalProfileSpawner (not a
subclass of SimpleLocalProcessSpawner) never sees it.
"""

from pathlib import Path

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
load_subconfig(str(Path(__file__).resolve().parent.parent / "tests" / "hub_config.py"))  # noqa: F821
c.SimpleLocalProcessSpawner.args = ["--allow-root"]
