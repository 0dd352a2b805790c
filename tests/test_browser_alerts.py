"""The panel's Alerts section in a real browser: Debian's chromium driven by Playwright.

A hub with the alerts service, evaluating every half second, whose disk rule's threshold is
all but zero (``disk_percent``) with no ``for``: the data directory's disk alert
(``disk_full``, a platform alert, the admins') fires at the first evaluation. Its bootstrapped
admin and a user, alice, each have a password and a running server, which reaches the
service through ``SHIPYARD_ALERTS_URL`` (config/jupyterhub_config.py). Alice's panel shows
no alert and says what is watched; her forwarder answers her own (none) and the admins'
alert as a missing one. The admin's panel shows the alert firing: its rule, the disk it is
about, since when, its severity, how full the disk is, and that it is the platform's.
Only the alerts service runs, so the panel's other sections say that theirs are not set
up; the Alerts section itself shows no error.

Alice sets her own notification target in the section: a ``json://`` webhook, with a
password, at a receiver on loopback (``allow_private_targets``, as a test hub must); it is
listed as the service redacts it (scheme and host), and her forwarder answers the same. A
scheme this hub does not allow (``user_schemes`` leaves out ``gotify``) is refused: the
service's message shows next to the field, with the schemes allowed, and her target stays.
The admin's section lists no target: alice's are hers alone. Screenshots are kept in
test-artifacts/browser/alerts-*.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from .browser import ARTIFACTS, CHROMIUM, panel_section
from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import service_hub
from .test_alerts import Webhook
from .test_browser_audit import dismiss_toasts, open_lab

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}: apt-get install chromium"
    ),
]

USER = "alice"

CONFIG = """
c.AlertsService.evaluation_interval = 0.5
c.AlertRules.disk_percent = 1e-9
c.AlertRules.disk_for = 0
c.AlertNotifier.allow_private_targets = True
c.AlertNotifier.user_schemes = ["json", "jsons", "slack"]
"""


@pytest.fixture(scope="module")
def alerted(hub_factory):
    """A hub with the alerts service; an admin and alice with passwords and running servers."""
    with service_hub(
        hub_factory,
        "browser-alerts",
        tagged("sybal-"),
        tagged("shipyard-test-browser-alerts"),
        ["alerts"],
        configs={"alerts": CONFIG},
    ) as hub:
        creds = json.loads((hub.data_dir / "credentials.json").read_text())
        admin = creds["admin_user"]
        passwords = {admin: creds["admin_password"], USER: hub.add_user_with_password(USER)}
        for name in passwords:
            hub.start_server(name, timeout=180)
        r = hub.api("POST", f"/users/{admin}/tokens", json={"note": "alerts browser test"})
        assert r.status_code == 201, r.text
        yield hub, admin, passwords, r.json()["token"]


def test_a_user_sees_what_is_watched_and_an_admin_the_firing_disk_alert(alerted, page):
    hub, admin, passwords, token = alerted

    def firing() -> dict | None:
        r = requests.get(
            f"{hub.url}/services/alerts/api/alerts?state=firing",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        disk = [a for a in r.json()["alerts"] if a["rule"] == "disk_full"]
        return disk[0] if disk else None

    disk = wait_for(firing, 60, 0.5, "the disk alert to fire")

    # -- alice: no alert of hers; the section says what is watched, and shows no error
    open_lab(page, hub, USER, passwords[USER])
    section = panel_section(page, "alerts")
    section.wait_for(timeout=60_000)
    wait_for(lambda: section.get_attribute("data-state") == "ok", 60, 0.3, "the alerts section")
    empty = section.locator(".shipyard-empty").inner_text()
    assert empty.startswith("No alerts.") and "are watched" in empty, empty
    assert "As an admin" not in empty
    assert section.locator("[data-alert]").count() == 0
    assert section.locator(".shipyard-error").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dismiss_toasts(page)
    section.screenshot(path=str(ARTIFACTS / "alerts-user-section.png"))
    # her forwarder: her own alerts (none), the admins' alert answered as a missing one
    r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/alerts?include_resolved=true")
    assert r.status == 200 and r.json() == {"alerts": []}, r.text()
    r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/alerts/{disk['id']}")
    assert r.status == 404 and r.json()["status"] == 404, r.text()
    r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/alerts?limit=0")
    assert r.status == 400 and r.json()["message"], r.text()

    # -- alice's notification targets: none yet; a webhook at a local receiver, redacted
    box = section.locator('[data-targets="box"]')
    box.locator('[data-targets="none"]').wait_for(timeout=60_000)
    hint = box.locator('[data-targets="schemes"]').inner_text()
    assert hint.startswith("Allowed here: json://, jsons://, slack://."), hint
    field = box.locator('textarea[name="shipyard-alert-targets"]')
    hook = Webhook()
    try:
        webhook = hook.url.replace("json://", "json://alice:s3cret-pw@")
        field.fill(webhook)
        box.locator('[data-action="targets-save"]').click()
        target = box.locator('[data-target="json://127.0.0.1/…"]')
        target.wait_for(timeout=60_000)
        assert field.input_value() == ""
        assert "s3cret-pw" not in box.inner_text() and str(hook.port) not in box.inner_text()
        r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/alerts/targets")
        assert r.status == 200, r.text()
        assert r.json()["targets"] == ["json://127.0.0.1/…"], r.text()
        assert r.json()["schemes"] == ["json", "jsons", "slack"], r.text()
        # a scheme this hub does not allow: the service's 400 next to the field; nothing replaced
        field.fill("gotify://example.org/token")
        box.locator('[data-action="targets-save"]').click()
        error = box.locator('[data-targets="error"]')
        error.wait_for(timeout=60_000)
        assert error.inner_text() == (
            "URL 1: the scheme 'gotify' is not one users may use here (allowed: json, jsons, slack)"
        ), error.inner_text()
        assert field.get_attribute("aria-invalid") == "true"
        assert field.input_value() == "gotify://example.org/token"  # kept, to be fixed
        assert box.locator("[data-target]").all_inner_texts() == ["json://127.0.0.1/…"]
        dismiss_toasts(page)
        section.screenshot(path=str(ARTIFACTS / "alerts-user-targets.png"))
    finally:
        hook.stop()
    page.context.clear_cookies()

    # -- the admin: the disk alert firing, the platform's, with how full the disk is
    open_lab(page, hub, admin, passwords[admin])
    section = panel_section(page, "alerts")
    item = section.locator(f'[data-alert="{disk["id"]}"]')
    item.wait_for(timeout=60_000)
    assert item.get_attribute("data-alert-state") == "firing"
    assert item.get_attribute("data-rule") == "disk_full"
    assert (
        section.locator('[data-alerts="open"] [data-alert]').first.get_attribute("data-alert-state")
        == "firing"
    )
    assert "firing" in section.locator(".shipyard-section-title").inner_text()
    assert item.locator(".shipyard-alert-rule").inner_text() == "Disk full"
    assert item.locator(".shipyard-alert-about").inner_text() == f"disk {disk['labels']['path']}"
    assert item.locator('[data-severity="critical"]').count() == 1
    assert item.locator(".shipyard-alert-figure").inner_text().endswith("% full")
    assert item.locator(".shipyard-alert-since").inner_text().startswith("firing ")
    assert item.locator(".shipyard-alert-owner").inner_text() == "platform"
    assert item.locator(".shipyard-alert-summary").inner_text() == disk["summary"]
    r = page.request.get(f"{hub.url}/user/{admin}/shipyard/api/alerts/{disk['id']}")
    assert r.status == 200 and r.json()["key"] == disk["key"], r.text()
    assert section.locator(".shipyard-error").count() == 0
    # alice's target is hers alone: the admin's section and forwarder list none
    section.locator('[data-targets="none"]').wait_for(timeout=60_000)
    r = page.request.get(f"{hub.url}/user/{admin}/shipyard/api/alerts/targets")
    assert r.status == 200 and r.json()["targets"] == [], r.text()
    dismiss_toasts(page)
    page.screenshot(path=str(ARTIFACTS / "alerts-admin.png"))
    section.screenshot(path=str(ARTIFACTS / "alerts-admin-section.png"))
