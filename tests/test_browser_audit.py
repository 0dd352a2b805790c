"""The panel's Audit section in a real browser: Debian's chromium driven by Playwright.

A hub with the audit service, the scheduler and the deployer; its bootstrapped admin (the generated
password `shipyard up` prints once) and a user added as an admin adds users (a one-time
password replaced by one of their own), each with a server started through the REST API. The user's panel has no Audit section and the server's
forwarder answers them the service's 403; the admin's panel lists the records of what just
happened (the users created, the servers started, the user's refused read marked as
denied), filters them by action, and verifies the trail, with no error anywhere in the panel. The browser, its fixture and the
panel's locators are tests/browser.py's; a failing step leaves a screenshot there too.
Screenshots of the admin's view are kept in test-artifacts/browser/audit-admin*.png.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .browser import ARTIFACTS, CHROMIUM, panel_section
from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import service_hub

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}: apt-get install chromium"
    ),
]

USER = "bob"


@pytest.fixture(scope="module")
def audited(hub_factory):
    """A hub with the audit service; an admin and a user with passwords and running servers.

    The scheduler and the deployer run too, so that the panel's other sections work and
    the admin's view shows no error at all.
    """
    with service_hub(
        hub_factory,
        "browser-audit",
        tagged("sybau-"),
        tagged("shipyard-test-browser-audit"),
        ["audit", "scheduler", "deployer"],
        # both as shipped: no test config
        configs={"scheduler": None, "deployer": None},
    ) as hub:
        creds = json.loads((hub.data_dir / "credentials.json").read_text())
        admin = creds["admin_user"]
        passwords = {admin: creds["admin_password"], USER: hub.add_user_with_password(USER)}
        assert hub.api("GET", f"/users/{admin}").json()["admin"] is True
        for name in passwords:
            hub.start_server(name, timeout=180)
        yield hub, admin, passwords


def open_lab(tab, hub, name: str, password: str) -> None:
    """Log ``name`` in on the hub's page, open their JupyterLab and the Shipyard panel."""
    tab.goto(f"{hub.url}/hub/login")
    tab.fill("#username_input", name)
    tab.fill("#password_input", password)
    tab.click("#login_submit")
    tab.wait_for_url(lambda url: "/hub/login" not in url, timeout=60_000)
    tab.goto(f"{hub.url}/user/{name}/lab")
    tab.wait_for_selector("#shipyard-panel", state="attached", timeout=120_000)
    tab.locator(
        '.jp-SideBar [title="Shipyard"], .jp-SideBar [data-id="shipyard-panel"]'
    ).first.click()
    profile = panel_section(tab, "profile")
    wait_for(lambda: profile.get_attribute("data-state") == "ok", 60, 0.3, "the profile section")


def dismiss_toasts(tab) -> None:
    """Answer JupyterLab's "news?" notification with No, so screenshots show the panel whole."""
    from playwright.sync_api import Error as PlaywrightError

    for no in tab.locator(".Toastify__toast button", has_text=re.compile(r"^No$")).all():
        try:
            no.click(timeout=5_000)
        except PlaywrightError:  # gone or still sliding in: it only hides part of a picture
            pass


def test_admins_read_filter_and_verify_the_trail_users_see_nothing_of_it(audited, page):  # noqa: F811
    hub, admin, passwords = audited

    # -- a user who is not an admin: no Audit section, and the forwarder passes on the
    # service's refusal (the panel never asked: this request is the only one)
    open_lab(page, hub, USER, passwords[USER])
    page.wait_for_timeout(2000)  # a poll or two: the section must not appear later either
    assert panel_section(page, "audit").count() == 0
    assert page.locator('#shipyard-panel [data-action="audit-verify"]').count() == 0
    for route in ("records", "verify"):
        r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/audit/{route}")
        assert r.status == 403, (route, r.status, r.text())
        assert "admin" in r.json()["message"], r.text()
    page.context.clear_cookies()

    # -- the admin: the records of what happened above, newest first
    open_lab(page, hub, admin, passwords[admin])
    audit = panel_section(page, "audit")
    audit.wait_for(timeout=60_000)
    for action in ("user.create", "server.start", "login.succeeded"):
        audit.locator(f'[data-audit-action="{action}"]').first.wait_for(timeout=30_000)
    started = audit.locator('[data-audit-action="server.start"]').all_inner_texts()
    assert any(USER in text for text in started), started
    seqs = [
        int(s)
        for s in audit.locator("[data-audit-seq]").evaluate_all(
            "items => items.map(i => i.dataset.auditSeq)"
        )
    ]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 5, seqs
    # the user's refused read is there, marked, with who and from where
    denied = audit.locator('.shipyard-audit-denied[data-audit-action="audit.read"]').first
    denied.wait_for(timeout=30_000)
    assert denied.get_attribute("data-outcome") == "denied"
    text = denied.inner_text()
    assert USER in text and "denied" in text and "from " in text, text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    denied.scroll_into_view_if_needed()
    dismiss_toasts(page)
    page.screenshot(path=str(ARTIFACTS / "audit-admin-records.png"))

    # -- filter by action: only server records remain
    audit.locator('[name="shipyard-audit-action"]').fill("server")
    audit.locator('[data-action="audit-apply"]').click()

    def only_servers() -> bool:
        actions = audit.locator("[data-audit-action]").evaluate_all(
            "items => items.map(i => i.dataset.auditAction)"
        )
        return bool(actions) and all(a.startswith("server.") for a in actions)

    wait_for(only_servers, 30, 0.3, "only server.* records")
    assert audit.locator('[data-audit-action="server.start"]').count() >= 2

    # -- a filter the service refuses: its message, in the section
    audit.locator('[name="shipyard-audit-since"]').fill("yesterday")
    audit.locator('[data-action="audit-apply"]').click()
    error = audit.locator(".shipyard-error")
    error.wait_for(timeout=30_000)
    assert "since" in error.inner_text() and "2h" in error.inner_text(), error.inner_text()
    audit.locator('[name="shipyard-audit-since"]').fill("1d")
    audit.locator('[data-action="audit-apply"]').click()
    wait_for(lambda: audit.locator(".shipyard-error").count() == 0, 30, 0.3, "the error gone")
    wait_for(only_servers, 30, 0.3, "server.* records of the last day")

    # -- verify: the trail is intact
    audit.locator('[data-action="audit-verify"]').click()
    verdict = audit.locator('[data-verify="ok"]')
    verdict.wait_for(timeout=60_000)
    assert re.search(r"Trail intact: \d+ records", verdict.inner_text()), verdict.inner_text()
    assert audit.locator('[data-verify="broken"]').count() == 0

    # -- the admin's forwarder answers as the service does
    r = page.request.get(f"{hub.url}/user/{admin}/shipyard/api/audit/records?action=user&limit=5")
    assert r.status == 200, r.text()
    assert {rec["action"] for rec in r.json()["records"]} <= {
        "user.create",
        "user.update",
        "user.delete",
        "user.approve",
        "user.password_change",
    }

    # the admin's whole panel works: no section shows an error
    errors = page.locator("#shipyard-panel .shipyard-error").all_inner_texts()
    assert not errors, errors
    audit.scroll_into_view_if_needed()
    dismiss_toasts(page)
    page.screenshot(path=str(ARTIFACTS / "audit-admin.png"))
    page.locator("#shipyard-panel").screenshot(path=str(ARTIFACTS / "audit-admin-panel.png"))
