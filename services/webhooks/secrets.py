"""Which secret signs a job's webhooks: the secret of the API key that made the job, or
the server-wide ``webhook_secret`` for jobs made without keys (the embedded default).

The key store is asked through a protocol, so webhooks never import auth (auth's keys
use webhooks' signing to mint their secrets: imports point one way)."""

from __future__ import annotations

from typing import Protocol


class KeySecrets(Protocol):
    """Where per-key signing secrets live (``services.auth.keys.ApiKeyStore``)."""

    async def webhook_secret(self, prefix: str) -> str | None: ...

    async def rotate_webhook_secret(self, prefix: str) -> str: ...


class WebhookSecrets:
    """Looks up the signing secret by job owner (an API key prefix or ``anonymous``)."""

    def __init__(self, keys: KeySecrets, server_secret: str | None) -> None:
        self.keys = keys
        self.server_secret = server_secret

    async def for_owner(self, owner: str) -> str | None:
        """The owner's key secret, else the server's; None when webhooks cannot be signed."""
        return await self.keys.webhook_secret(owner) or self.server_secret
