"""Trigger kinds: one registry, the API models and the database agree; the interface holds."""

from __future__ import annotations

import re
import typing
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, text

from hub_ext.services.scheduler import models, orm
from hub_ext.services.scheduler.db import upgrade
from hub_ext.services.scheduler.triggers import KINDS, TriggerKind, public_spec
from hub_ext.services.scheduler.triggers.webhook import hash_secret

EXAMPLES = {
    "cron": models.CronTrigger(expression="30 6 * * 1-5", timezone="Europe/Berlin"),
    "file": models.FileTrigger(glob="incoming/*.csv"),
    "webhook": models.WebhookTrigger(),
    "after_job": models.AfterJobTrigger(upstream_job_id="a" * 32),
}


def api_kinds() -> dict[str, type]:
    union = typing.get_args(typing.get_args(models.Trigger)[0])
    return {typing.get_args(m.model_fields["kind"].annotation)[0]: m for m in union}


def test_registry_api_models_and_database_name_the_same_kinds(tmp_path):
    assert set(KINDS) == set(api_kinds()) == set(orm.TRIGGER_KINDS) == set(EXAMPLES)
    assert {name: kind.model for name, kind in KINDS.items()} == api_kinds()
    assert all(kind.name == name for name, kind in KINDS.items())
    url = f"sqlite:///{tmp_path / 'scheduler.sqlite'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        table = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'triggers'")
        ).scalar_one()
    engine.dispose()
    allowed = re.search(r"kind IN \(([^)]*)\)", table).group(1)
    assert set(re.findall(r"'(\w+)'", allowed)) == set(KINDS)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_stored_trigger_describes_as_the_model_it_was_made_from(name):
    kind, model = KINDS[name], EXAMPLES[name]
    spec, secret = kind.spec(model)
    assert public_spec(kind.describe(spec)) == public_spec(model)
    if name == "webhook":
        # shown once, stored only as its hash, never described
        assert secret and spec == {"secret_sha256": hash_secret(secret)}
        assert secret not in public_spec(kind.describe(spec))
        assert spec["secret_sha256"] not in public_spec(kind.describe(spec))
    else:
        assert secret is None


def test_only_cron_has_upcoming_times():
    now = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)  # a Monday
    cron = KINDS["cron"]
    assert cron.upcoming(EXAMPLES["cron"], now, 3) == [
        now,
        datetime(2026, 1, 6, 5, 30, tzinfo=timezone.utc),
        datetime(2026, 1, 7, 5, 30, tzinfo=timezone.utc),
    ]
    assert cron.upcoming(EXAMPLES["cron"], None, 3) == []  # disabled
    for name in ("file", "webhook", "after_job"):
        assert KINDS[name].upcoming(EXAMPLES[name], now, 3) == []


def test_a_kind_fails_fast_without_its_methods_or_name():
    class NoDescribe(TriggerKind):
        name = "nodescribe"
        model = models.FileTrigger

        def spec(self, model):
            return {}, None

    with pytest.raises(TypeError, match="describe"):
        NoDescribe()

    with pytest.raises(TypeError, match="does not set name"):

        class NoName(TriggerKind):
            model = models.FileTrigger

            def spec(self, model):
                return {}, None

            def describe(self, spec):
                return models.FileTrigger.model_construct()
