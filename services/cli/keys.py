"""``pixserve keys create|list|revoke``: manage API keys in the platform's Redis."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from services.auth.keys import ApiKey, ApiKeyStore
from services.cli.tables import table
from services.config import Settings
from services.errors import InvalidParameter, ServiceUnavailable
from services.redis_client import connect_redis

T = TypeVar("T")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("keys", help="create, list or revoke API keys")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key (its secret is shown once)")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument("--rate-limit", type=int, help="requests per minute (default: settings)")
    create.add_argument(
        "--admin", action="store_true", help="may use the operator dashboard and /v1/admin"
    )
    create.set_defaults(handler=create_key)
    listing = actions.add_parser("list", help="keys with prefix, name, state")
    listing.set_defaults(handler=list_keys)
    revoke = actions.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")
    revoke.set_defaults(handler=revoke_key)
    secret = actions.add_parser(
        "webhook-secret", help="show (or --rotate) the secret that signs a key's webhooks"
    )
    secret.add_argument("prefix")
    secret.add_argument("--rotate", action="store_true", help="replace it with a new one")
    secret.set_defaults(handler=webhook_secret)


def create_key(args: argparse.Namespace, settings: Settings) -> int:
    async def create(store: ApiKeyStore) -> tuple[str, ApiKey, str | None]:
        token, key = await store.create(args.name, args.rate_limit, args.admin)
        return token, key, await store.webhook_secret(key.prefix)

    token, key, secret = _run(settings, create)
    role = "admin key" if key.admin else "key"
    print(f"created {role} {key.prefix} ({key.name}); keep it, it is not shown again:")
    print(token)
    print(f"its webhook signing secret (also: pixserve keys webhook-secret {key.prefix}):")
    print(secret)
    return 0


def list_keys(args: argparse.Namespace, settings: Settings) -> int:
    keys = _run(settings, lambda store: store.list())
    rows = [
        [key.prefix, "active" if key.active else "revoked", "admin" if key.admin else "user",
         str(key.rate_per_minute or settings.rate_limit_per_minute),
         time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(key.created_at)), key.name]
        for key in keys
    ]  # fmt: skip
    headers = ["PREFIX", "STATE", "ROLE", "RATE/MIN", "CREATED (UTC)", "NAME"]
    print(table(headers, rows, right=frozenset({3})))
    return 0


def revoke_key(args: argparse.Namespace, settings: Settings) -> int:
    key = _run(settings, lambda store: store.revoke(args.prefix))
    print(f"revoked key {key.prefix} ({key.name})")
    return 0


def webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    async def lookup(store: ApiKeyStore) -> str:
        if args.rotate:
            return await store.rotate_webhook_secret(args.prefix)
        secret = await store.webhook_secret(args.prefix)
        if secret is None and await store.get(args.prefix) is None:
            raise InvalidParameter(f"no API key with prefix '{args.prefix}'")
        if secret is None:
            raise InvalidParameter(f"key {args.prefix} has no webhook secret yet: use --rotate")
        return secret

    print(_run(settings, lookup))
    return 0


def _run(settings: Settings, action: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    async def call() -> T:
        redis = connect_redis(settings)
        try:
            return await action(ApiKeyStore(redis))
        except RedisError as exc:
            raise ServiceUnavailable(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc
        finally:
            await redis.aclose()

    return asyncio.run(call())
