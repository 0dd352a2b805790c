"""The environments the benchmarks run in, built where the test suite builds them.

Never in the folder a running install uses (``/opt/shipyard/envs`` as root, see
:func:`hub_ext.environments.catalog.default_envs_dir`): a benchmark that rebuilt
an environment there would change what the install's users run. The test
suite's folder (:data:`tests.conftest.TEST_ENVS_DIR`) is shared with the tests,
so an environment whose lock is unchanged is built once for both.
"""

from __future__ import annotations

import os

from hub_ext.environments.build import BuildResult, EnvironmentBuilder
from hub_ext.environments.catalog import get_environment
from tests.conftest import TEST_ENVS_DIR


def build_environment(name: str) -> BuildResult:
    """Build the environment ``name`` (a no-op when its lock is unchanged) and use that folder.

    ``SHIPYARD_ENVS_DIR`` is set to it, so the hubs and services the benchmark starts
    find the environments there too.
    """
    os.environ["SHIPYARD_ENVS_DIR"] = str(TEST_ENVS_DIR)
    TEST_ENVS_DIR.parent.mkdir(exist_ok=True)
    TEST_ENVS_DIR.parent.chmod(0o755)  # the benchmarks' accounts run the environment's Python
    return EnvironmentBuilder(TEST_ENVS_DIR).build(get_environment(name))
