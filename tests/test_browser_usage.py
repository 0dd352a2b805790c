"""The panel's Usage section in a real browser: Debian's chromium driven by Playwright.

A hub with the usage service (sampling every half second), the scheduler, the deployer and
the audit service; its bootstrapped admin and a user, alice, each with a password and a
running server. Alice burns a few seconds of CPU in a kernel of her server; once the
service has counted it, her panel's Usage section shows her CPU-hours and cost over the
last 30 days, a bar a day (today's above zero), her usage by kind (her server) and by
profile, and nothing of the platform; her forwarder answers her own usage and refuses
another user's as missing. The admin's panel shows the platform too: alice among the
users, the profiles, the waste report; and no section of either panel shows an error.
Screenshots are kept in test-artifacts/browser/usage-*.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from .browser import ARTIFACTS, CHROMIUM, panel_section
from .conftest import needs_root
from .hubtools import run_in_kernel, stdout_of, tagged, wait_for
from .services import service_hub
from .test_browser_audit import dismiss_toasts, open_lab

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}: apt-get install chromium"
    ),
]

USER = "alice"

CONFIG = """
c.UsageService.sample_interval = 0.5
c.UsageService.cpu_hour_price = 0.5
c.UsageService.gib_hour_price = 0.25
c.UsageService.currency = "EUR"
"""

#: Burns about three seconds of CPU in the kernel (at most 30 s of wall time).
BURN = """
import time
end = time.monotonic() + 30
while time.process_time() < 3 and time.monotonic() < end:
    pass
print(round(time.process_time(), 2))
"""


@pytest.fixture(scope="module")
def metered(hub_factory):
    """A hub with the usage service; an admin and alice with passwords and running servers."""
    with service_hub(
        hub_factory,
        "browser-usage",
        tagged("sybus-"),
        tagged("shipyard-test-browser-usage"),
        ["usage", "scheduler", "deployer", "audit"],
        configs={"usage": CONFIG, "scheduler": None, "deployer": None},
    ) as hub:
        creds = json.loads((hub.data_dir / "credentials.json").read_text())
        admin = creds["admin_user"]
        passwords = {admin: creds["admin_password"], USER: hub.add_user_with_password(USER)}
        for name in passwords:
            hub.start_server(name, timeout=180)
        r = hub.api("POST", f"/users/{USER}/tokens", json={"note": "usage browser test"})
        assert r.status_code == 201, r.text
        yield hub, admin, passwords, r.json()["token"]


def test_a_user_sees_her_usage_plotted_and_an_admin_the_platforms(metered, page):  # noqa: F811
    hub, admin, passwords, token = metered

    # -- alice uses CPU in her server; the service counts it (in her server's cgroup)
    burnt = float(stdout_of(run_in_kernel(hub.server_url(USER), token, BURN)).split()[-1])
    assert burnt >= 1.0, burnt

    def counted() -> dict | None:
        r = requests.get(
            f"{hub.url}/services/usage/api/usage",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        rows = {row["key"]: row for row in r.json()["rows"]}
        mine = rows.get(USER)
        return mine if mine and mine["cpu_seconds"] >= burnt * 0.9 else None

    total = wait_for(counted, 60, 0.5, "alice's CPU to be counted")

    # -- alice's panel: her usage, a bar a day, by kind and profile; no platform
    open_lab(page, hub, USER, passwords[USER])
    usage = panel_section(page, "usage")
    usage.wait_for(timeout=60_000)
    wait_for(lambda: usage.get_attribute("data-state") == "ok", 60, 0.3, "the usage section")
    cpu = usage.locator('[data-usage-total="cpu_hours"] dd').inner_text()
    assert cpu.endswith(" h") and cpu != "0 h", cpu
    cost = usage.locator('[data-usage-total="cost"] dd').inner_text()
    assert cost.endswith(" EUR") and float(cost.split()[0]) > 0, cost
    bars = usage.locator("rect.shipyard-usage-bar")
    assert bars.count() in (30, 31), bars.count()
    assert float(bars.last.get_attribute("height")) > 0 or float(
        bars.nth(bars.count() - 2).get_attribute("height")
    ), "no bar for today"
    assert usage.locator('[data-usage-table="kind"] [data-usage-key="server"]').count() == 1
    assert usage.locator('[data-usage-table="profile"] tbody tr').count() >= 1
    assert usage.locator("[data-usage-platform]").count() == 0
    # another metric, plotted on a click
    usage.locator('[data-action="usage-metric"][data-metric="mem_gib_hours"]').click()
    usage.locator('figure[data-metric="mem_gib_hours"]').wait_for(timeout=10_000)
    errors = page.locator("#shipyard-panel .shipyard-error").all_inner_texts()
    assert not errors, errors
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    usage.scroll_into_view_if_needed()
    dismiss_toasts(page)
    page.screenshot(path=str(ARTIFACTS / "usage-user.png"))
    usage.screenshot(path=str(ARTIFACTS / "usage-user-section.png"))

    # her forwarder answers her own usage as the service does, and another's as missing
    r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/usage?by=day")
    assert r.status == 200, r.text()
    assert sum(row["cpu_seconds"] for row in r.json()["rows"]) >= total["cpu_seconds"] * 0.99
    r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/usage?user={admin}")
    assert r.status == 404 and r.json()["message"] == f"no usage of user {admin!r}", r.text()
    r = page.request.get(f"{hub.url}/user/{USER}/shipyard/api/usage?by=planet")
    assert r.status == 400 and r.json()["message"], r.text()
    page.context.clear_cookies()

    # -- the admin: their own usage, and the platform's with alice in it
    open_lab(page, hub, admin, passwords[admin])
    usage = panel_section(page, "usage")
    usage.wait_for(timeout=60_000)
    platform = usage.locator('[data-usage-platform="ok"]')
    platform.wait_for(timeout=60_000)
    alice = platform.locator(f'[data-usage-table="users"] [data-usage-key="{USER}"]')
    assert alice.count() == 1
    assert platform.locator('[data-usage-table="platform-profiles"] tbody tr').count() >= 1
    assert platform.locator(".shipyard-usage-waste, .shipyard-empty").count() >= 1
    # the admin's own totals are theirs, not everyone's
    assert usage.locator('.shipyard-usage-mine [data-usage-key="server"]').count() <= 1
    errors = page.locator("#shipyard-panel .shipyard-error").all_inner_texts()
    assert not errors, errors
    platform.scroll_into_view_if_needed()
    dismiss_toasts(page)
    page.screenshot(path=str(ARTIFACTS / "usage-admin.png"))
    usage.screenshot(path=str(ARTIFACTS / "usage-admin-section.png"))
