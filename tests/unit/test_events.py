"""Events never show a secret in their text, and hooks see every event once."""

from __future__ import annotations

import httpx
import requests

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    Event,
    ResilientConfig,
    resilient_api,
)
from smoothapi.events import FallbackServed, RetriesExhausted, RetryScheduled

SECRET_URL = "http://alice:s3cr3tpw@127.0.0.1:9/users?api_key=TOPSECRET"  # noqa: S105 - a fake


def _http_error(library: str) -> Exception:
    if library == "requests":
        response = requests.Response()
        response.status_code = 503
        response.url = SECRET_URL
        return requests.HTTPError(f"503 Server Error for url: {SECRET_URL}", response=response)
    request = httpx.Request("GET", SECRET_URL)
    return httpx.HTTPStatusError(
        f"Server error '503' for url '{SECRET_URL}'",
        request=request,
        response=httpx.Response(503, request=request),
    )


def test_event_text_names_the_error_type_never_its_message() -> None:
    """An exception's message holds the URL with userinfo and query; an event's repr/str
    shows only the exception's type (the object stays available as `.error`)."""
    for library in ("requests", "httpx"):
        error = _http_error(library)
        events: list[Event] = [
            RetryScheduled("http://127.0.0.1:9", 1, 0.1, 503, error),
            RetriesExhausted("http://127.0.0.1:9", 4, 503, error, "retries exhausted"),
            FallbackServed("http://127.0.0.1:9", error),
        ]
        for event in events:
            text = f"{event!r} {event!s}"
            assert "TOPSECRET" not in text
            assert "s3cr3tpw" not in text
            assert type(error).__name__ in text
            assert event.error is error


def test_events_from_a_failing_call_carry_no_secret_in_their_text() -> None:
    """End to end: the events a decorated call emits while failing on a secret URL."""
    seen: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.0, max_delay=0.0, max_retries=1),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2),
        fallback={"degraded": True},
        hooks=(seen.append,),
    )

    @resilient_api(config)
    def call() -> None:
        raise _http_error("requests")

    assert call() == {"degraded": True}
    assert seen
    for event in seen:
        assert "TOPSECRET" not in repr(event)
        assert "s3cr3tpw" not in repr(event)
