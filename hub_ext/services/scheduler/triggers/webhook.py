"""Webhook triggers: a job runs when its webhook is called with its secret.

**The secret is shown once.** :meth:`WebhookKind.spec` makes it and hands it
back to be returned to the caller (``DescribeJob.webhook_secret``); the row
keeps only its SHA-256 (:func:`hash_secret`), compared in constant time by
:meth:`WebhookKind.accepts`, and :meth:`WebhookKind.describe` leaves it out.
The call itself is :meth:`~.firing.Firing.fire_webhook`; a job has at most one
webhook trigger (checked by the API model), so the secret names the trigger.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from ..models import WebhookTrigger
from ..orm import Trigger
from .base import TriggerKind


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class WebhookKind(TriggerKind):
    """``webhook``: see the module docstring."""

    name = "webhook"
    model = WebhookTrigger

    def spec(self, model: WebhookTrigger) -> tuple[dict[str, Any], str]:
        secret = secrets.token_urlsafe(32)
        return {"secret_sha256": hash_secret(secret)}, secret

    def describe(self, spec: dict[str, Any]) -> WebhookTrigger:
        return WebhookTrigger.model_construct()  # the secret's hash stays in the database

    @staticmethod
    def accepts(trigger: Trigger | None, secret: str) -> bool:
        """Whether ``secret`` is the webhook ``trigger``'s; the same time whether or not it is."""
        expected = trigger.spec["secret_sha256"] if trigger else hash_secret("")
        return hmac.compare_digest(expected, hash_secret(secret)) and trigger is not None
