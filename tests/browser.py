"""A real browser for the journey tests: Debian's chromium driven by Playwright.

Playwright cannot download its own browsers here, so the ``page`` fixture (conftest.py)
drives :data:`CHROMIUM` (``apt-get install chromium``). A test that fails leaves a
screenshot and the page's HTML in :data:`ARTIFACTS`.
"""

from __future__ import annotations

import os

from .hubtools import REPO

CHROMIUM = os.environ.get("SHIPYARD_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "browser"


def panel_section(page, name: str):
    return page.locator(f'#shipyard-panel [data-shipyard-section="{name}"]')
