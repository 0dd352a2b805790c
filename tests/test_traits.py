"""Every configurable trait Shipyard defines has a real help string (STYLE.md rule 2)."""

import importlib
import importlib.util
import inspect

import pytest
from traitlets import Integer, Unicode
from traitlets.config import Configurable

from .traitdocs import help_problem

MODULES = [
    "hub_ext.host.local",
    "hub_ext.spawners.spawner",
    "hub_ext.spawners.mixin",
    "hub_ext.spawners.kubespawner",
    "hub_ext.host.k8s",
    "hub_ext.services.tracking.app",
    "hub_ext.services.scheduler.executors.local",
    "hub_ext.services.scheduler.executors.warmstart",
    "hub_ext.services.scheduler.executors.kubernetes",
    "hub_ext.services.scheduler.app",
    "hub_ext.services.scheduler.notify",
    "hub_ext.services.deployer.app",
    "hub_ext.services.deployer.local.backend",
    "hub_ext.services.deployer.kubernetes",
    "hub_ext.services.secrets.app",
    "hub_ext.services.secrets.backend",
    "hub_ext.services.secrets.database",
    "hub_ext.services.secrets.kubernetes",
    "hub_ext.services.alerts.app",
    "hub_ext.services.alerts.rules",
    "hub_ext.services.alerts.notify",
    "hub_ext.audit.settings",
    "hub_ext.services.audit.app",
    "hub_ext.services.usage.app",
    "server_ext.extension",
    "server_ext.magics.base",
    "hub_ext.auth.ldap",
    "hub_ext.auth.oidc",
    "hub_ext.auth.native",
]


def shipyard_modules():
    modules = []
    for name in MODULES:
        # hub_ext.spawners.kubespawner is new and may not exist in every checkout yet;
        # a module that exists but fails to import is a real failure
        if importlib.util.find_spec(name) is None:
            continue
        modules.append(importlib.import_module(name))
    return modules


def configurable_classes(module) -> list[type[Configurable]]:
    """Configurable subclasses defined in ``module`` itself (not imported into it)."""
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Configurable) and cls.__module__ == module.__name__
    ]


CLASSES = [cls for module in shipyard_modules() for cls in configurable_classes(module)]
TRAITS = [
    pytest.param(cls, name, id=f"{cls.__name__}.{name}")
    for cls in CLASSES
    for name in sorted(cls.class_own_traits(config=True))
]


def test_the_known_configurables_are_checked():
    names = {cls.__name__ for cls in CLASSES}
    assert {
        "ProfileSpawnerMixin",
        "LocalProfileSpawner",
        "ShipyardExtension",
        "TrackingService",
        "ShipyardMagics",
    } <= names
    assert len(TRAITS) >= 8


@pytest.mark.parametrize("cls, name", TRAITS)
def test_configurable_trait_has_help(cls, name):
    problem = help_problem(cls.class_traits()[name])
    assert problem is None, f"{cls.__module__}.{cls.__name__}.{name} {problem}"


def test_the_check_catches_missing_and_one_line_help():
    class Sloppy(Configurable):
        bare = Integer(1).tag(config=True)
        terse = Unicode("", help="The name.").tag(config=True)
        good = Unicode(
            "",
            help="""
            The name.

            Example::

                c.Sloppy.good = "x"
            """,
        ).tag(config=True)
        internal = Integer(2)  # not configurable: not checked

    traits = Sloppy.class_own_traits(config=True)
    assert sorted(traits) == ["bare", "good", "terse"]
    assert help_problem(traits["bare"]) == "has no help"
    assert help_problem(traits["terse"]) == (
        "has a one-line help ('The name.'); add detail and an example"
    )
    assert help_problem(traits["good"]) is None
