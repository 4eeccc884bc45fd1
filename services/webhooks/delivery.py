"""Webhook delivery: signed POSTs with retries (exponential backoff, full jitter) and a
circuit breaker per destination host, all through the SSRF-guarded fetcher.

A delivery keeps one ``webhook-id`` across its retries, so receivers de-duplicate. A
host that keeps failing opens its breaker: deliveries to it are dropped (and logged)
until the cool-down ends, so one dead receiver cannot tie up the dispatchers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from services.errors import PixserveError
from services.net.fetch import SafeFetcher
from services.webhooks.signing import signed_headers

logger = logging.getLogger(__name__)
_RETRYABLE = {408, 425, 429}


@dataclass
class Breaker:
    """Consecutive failures of one host; open (refusing) until ``open_until``."""

    failures: int = 0
    open_until: float = 0.0


@dataclass
class DeliveryReport:
    """What happened to one delivery: attempts made and whether it got a 2xx."""

    message_id: str
    delivered: bool
    attempts: int
    statuses: list[int | str] = field(default_factory=list)


class WebhookSender:
    """Delivers events to webhook URLs."""

    def __init__(
        self,
        fetcher: SafeFetcher,
        max_attempts: int = 6,
        base_delay_s: float = 1.0,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 60.0,
    ) -> None:
        self.fetcher = fetcher
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown_s = breaker_cooldown_s
        self.breakers: dict[str, Breaker] = {}

    async def deliver(
        self, url: str, message_id: str, payload: dict[str, Any], secret: str
    ) -> DeliveryReport:
        """POST ``payload`` signed with ``secret`` until a 2xx, a refusal or the last try."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        report = DeliveryReport(message_id, False, 0)
        host = urlsplit(url).netloc
        for attempt in range(self.max_attempts):
            if self._is_open(host):
                report.statuses.append("circuit-open")
                logger.warning("webhook %s to %s dropped: circuit open", message_id, host)
                return report
            report.attempts += 1
            status = await self._attempt(url, message_id, body, secret)
            report.statuses.append(status)
            if isinstance(status, int) and 200 <= status < 300:
                self.breakers.pop(host, None)
                report.delivered = True
                return report
            self._record_failure(host)
            if isinstance(status, int) and 400 <= status < 500 and status not in _RETRYABLE:
                return report  # the receiver refuses this event; retrying will not help
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(random.uniform(0, self.base_delay_s * 2**attempt))
        return report

    async def _attempt(self, url: str, message_id: str, body: bytes, secret: str) -> int | str:
        headers = {"content-type": "application/json",
                   **signed_headers(secret, message_id, body)}  # fmt: skip
        try:
            status, _, _ = await self.fetcher.request("POST", url, body, headers)
        except PixserveError as exc:
            return exc.code
        return status

    def _is_open(self, host: str) -> bool:
        breaker = self.breakers.get(host)
        return breaker is not None and breaker.open_until > time.monotonic()

    def _record_failure(self, host: str) -> None:
        breaker = self.breakers.setdefault(host, Breaker())
        breaker.failures += 1
        if breaker.failures >= self.breaker_threshold:
            breaker.open_until = time.monotonic() + self.breaker_cooldown_s
            breaker.failures = 0
