"""What a deployment's failure becomes at the Ingress: the platform's own error as it
was raised, a 500 for a replica's bug (a retry fails the same way), a retryable 503 for
a replica that died, and never Ray's traceback, pid, address or actor in a message."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from deployments.backend import _raised
from services.errors import ImageTooLarge, InternalError, ServiceUnavailable

TRACEBACK = 'Traceback (most recent call last):\n  File "/srv/deployments/codec.py", line 9'


def _task_error(cause: BaseException) -> RayTaskError:
    error: RayTaskError = RayTaskError(
        "Codec.convert", TRACEBACK, cause, pid=4242, ip="10.0.0.7", actor_id="abc123"
    ).as_instanceof_cause()
    return error


def test_a_platform_error_crosses_any_chain_of_steps_unchanged() -> None:
    inner = _task_error(ImageTooLarge("image is 9000x9000; the limit is 8192 px"))
    raised = _raised(_task_error(inner), "the Codec deployment")
    assert isinstance(raised, ImageTooLarge) and raised.status == 413


def test_a_replica_bug_is_a_500_without_internals() -> None:
    raised = _raised(_task_error(OSError("cannot write mode CMYK as PNG")), "the Codec deployment")
    assert isinstance(raised, InternalError) and raised.status == 500
    assert raised.message.startswith("the Codec deployment could not process this request")
    assert "OSError" not in raised.message and "CMYK" not in raised.message
    assert raised.headers == {}  # not retryable: no Retry-After


@pytest.mark.parametrize("error", [ActorDiedError(), _task_error(ActorDiedError())])
def test_a_dead_replica_is_a_retryable_503(error: Exception) -> None:
    raised = _raised(error, "the Upscaler deployment")  # type: ignore[arg-type]
    assert isinstance(raised, ServiceUnavailable) and raised.status == 503
    assert raised.headers["Retry-After"].isdigit()
    for internal in ("Traceback", "4242", "10.0.0.7", "abc123", ".py", "Actor", "Error"):
        assert internal not in raised.message
