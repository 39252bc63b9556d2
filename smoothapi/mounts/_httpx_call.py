"""One httpx request past the happy path: what both transports hand the engine.

``ResilientTransport.handle_request`` and
``AsyncResilientTransport.handle_async_request`` build the same :class:`Call`
and drive the engine with it; they differ only in the attempt they pass
(:meth:`Call.attempt` or :meth:`Call.attempt_async`, and the deadline-bounded
forms), which differ only by ``await`` - as httpx's own ``Auth`` keeps one
flow for its sync and async drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ..engine import Outcome, Policy, Resend
from ..errors import LoadShedError
from ._httpx_body import bounded
from ._transport import ATTEMPTS, LEFT, deadline_left

__all__ = ["Call"]


class Call:
    """One request's attempts after its first, or all of them: counted, timed, bounded.

    ``engine`` holds the keyword arguments of ``run_sync``/``run_async`` that do
    not depend on the driver (the fallback, the first outcome and its ticket,
    which attempts may be resent, the rejection error, when the call or its first
    attempt started).
    """

    __slots__ = ("attempts", "engine", "inner", "left", "request", "timeout")

    def __init__(
        self,
        request: httpx.Request,
        inner: Any,
        policy: Policy,
        first: Outcome | None,
        ticket: int,
        *,
        began: float | None,
        resend: Resend,
        fallback: Callable[[BaseException], Any] | None,
        open_error: Callable[[str, float], BaseException],
        shed_error: Callable[[LoadShedError], BaseException],
    ) -> None:
        self.request = request
        self.inner = inner
        self.attempts = 0 if first is None else 1
        self.left = left = deadline_left(policy)
        # The caller's own timeouts: each bounded attempt cuts them to the time left.
        self.timeout = request.extensions.get("timeout")
        self.engine: dict[str, Any] = {
            "fallback": fallback,
            "first": first,
            "resend": resend,
            "open_error": open_error,
            "shed_error": shed_error,
            "first_ticket": 0 if first is None else ticket,
            # The deadline counts from the call's start; a first attempt is timed from its own.
            "started": began if left is None else left.started,
        }

    def attempt(self) -> httpx.Response:
        self.attempts += 1
        return self._attempted(self.inner.handle_request(self.request))

    async def attempt_async(self) -> httpx.Response:
        self.attempts += 1
        return self._attempted(await self.inner.handle_async_request(self.request))

    def attempt_within(self, seconds: float) -> httpx.Response:
        self._shrink(seconds)
        try:
            return self.attempt()
        finally:
            self._restore()

    async def attempt_within_async(self, seconds: float) -> httpx.Response:
        self._shrink(seconds)
        try:
            return await self.attempt_async()
        finally:
            self._restore()

    def _attempted(self, response: httpx.Response) -> httpx.Response:
        """An attempt's response, told what its drain needs: its request, the deadline."""
        response.request = self.request  # the drain caps the body's reads through it
        if self.left is not None:
            setattr(response, LEFT, self.left)  # the drain stops at the deadline
        return response

    def _shrink(self, seconds: float) -> None:
        """Cut the request's timeouts (where httpcore reads them) to the deadline's ``seconds``."""
        timeout = self.timeout
        base = timeout if isinstance(timeout, dict) else {}
        self.request.extensions["timeout"] = {
            phase: seconds if base.get(phase) is None else min(base[phase], seconds)
            for phase in ("connect", "read", "write", "pool")
        }

    def _restore(self) -> None:
        """Give the request back its caller's own timeouts once the attempt is over.

        The next attempt cuts them to the time left then, a request sent again
        starts from them, and the returned body's reads cap their own.
        """
        if self.timeout is None:
            self.request.extensions.pop("timeout", None)
        else:
            self.request.extensions["timeout"] = self.timeout

    def returned(self, response: httpx.Response, *, is_async: bool) -> httpx.Response:
        """The response the transport returns: its attempt count, its body within the deadline."""
        response.extensions[ATTEMPTS] = self.attempts
        left = self.left
        return (
            response if left is None else bounded(response, self.request, left, is_async=is_async)
        )
