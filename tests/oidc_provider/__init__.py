"""A real OpenID Connect provider on loopback for the OIDC tests.

A small Django project with django-oidc-provider (authorization-code flow, PKCE, refresh
tokens, RS256 ID tokens, discovery at ``<issuer>/.well-known/openid-configuration``).
Users log in on Django's login form and grant the hub's client on the provider's
consent page; the ``groups`` scope gives a ``groups`` claim with the user's Django groups.

:class:`OIDCProvider` makes its SQLite database in a directory of its own, registers the
hub's client and the users (``tool.py setup``), and runs Django's server on a free port.
Group changes go through ``tool.py groups``, a separate process writing the provider's
database, as an administrator's change would.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..hubtools import REPO, free_port, wait_for


@dataclass
class OIDCProvider:
    """One provider: ``users`` maps name -> {"password": ..., "groups": [...]}."""

    directory: Path
    redirect_uris: list[str]
    users: dict[str, dict] = field(default_factory=dict)
    token_expire: int = 3600
    client_id: str = "shipyard-hub"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.url}/openid"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "OIDC_TEST_DB": str(self.directory / "provider.sqlite"),
            "OIDC_TEST_URL": self.url,
            "OIDC_TEST_TOKEN_EXPIRE": str(self.token_expire),
            "OIDC_TEST_SECRET_KEY": secrets.token_urlsafe(32),
        }

    def tool(self, *args: str) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "tests.oidc_provider.tool", *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"tool {args[0]} failed:\n{r.stdout}\n{r.stderr}"

    def start(self, timeout: float = 60) -> OIDCProvider:
        self.directory.mkdir(parents=True, exist_ok=True)
        spec = self.directory / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "client": {
                        "id": self.client_id,
                        "secret": self.client_secret,
                        "redirect_uris": self.redirect_uris,
                    },
                    "users": self.users,
                }
            )
        )
        self.tool("setup", str(spec))
        spec.unlink()
        self.log_path = self.directory / "provider.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.oidc_provider.tool", "serve", str(self.port)],
            cwd=REPO,
            env=self.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the provider exited:\n{self.log_path.read_text()}")
            try:
                url = f"{self.issuer}/.well-known/openid-configuration"
                return requests.get(url, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout, 0.2, "the OIDC provider to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self._log.close()

    def set_groups(self, user: str, groups: list[str]) -> None:
        self.tool("groups", user, *groups)
