"""Standard Webhooks signatures: the spec's published example, round trips, refusals."""

from __future__ import annotations

import pytest

from services.errors import InvalidParameter, Unauthorized
from services.webhooks.signing import generate_secret, signature, signed_headers, verify

# The example from the Standard Webhooks specification (svix's reference libraries).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_matches_the_specification_example() -> None:
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_round_trip_and_key_rotation() -> None:
    secret = generate_secret()
    headers = signed_headers(secret, "msg_1", b"{}", timestamp=1_700_000_000)
    verify(secret, headers, b"{}", now=1_700_000_100)
    old = signed_headers(generate_secret(), "msg_1", b"{}", timestamp=1_700_000_000)
    rotated = {
        **headers,
        "webhook-signature": f"{old['webhook-signature']} {headers['webhook-signature']}",
    }
    verify(secret, rotated, b"{}", now=1_700_000_000)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"body": b'{"test": 1}'}, "no webhook signature"),
        ({"now": SPEC_TIMESTAMP + 301}, "tolerance"),
        ({"headers": {"webhook-id": SPEC_ID}}, "missing"),
    ],
)
def test_refusals(change: dict[str, object], words: str) -> None:
    headers = change.get("headers") or signed_headers(
        SPEC_SECRET, SPEC_ID, SPEC_BODY, SPEC_TIMESTAMP
    )
    body = change.get("body", SPEC_BODY)
    now = change.get("now", SPEC_TIMESTAMP)
    with pytest.raises(Unauthorized, match=words):
        verify(SPEC_SECRET, headers, body, now=now)  # type: ignore[arg-type]


def test_bad_secret() -> None:
    with pytest.raises(InvalidParameter, match="whsec_"):
        signature("plain", "id", 1, b"")
