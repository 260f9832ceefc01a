"""Guessing write keys is slowed down: after `max_failures` failed authentications from one
client address within `window_s`, every request from it gets 429 until the window ends.

The address is refused before its key is checked; otherwise the answer would still tell a
guessed key from a wrong one. State is per worker process (bounded; the oldest entries go
first when it is full), so with W workers an address gets up to W x `max_failures` tries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Final

MAX_TRACKED: Final = 100_000


class AuthFailures:
    def __init__(
        self,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_tracked = max_tracked
        self._windows: dict[Hashable, tuple[float, int]] = {}  # client -> (window start, count)

    def retry_after(self, client: Hashable) -> int | None:
        """Seconds until `client` may try again, or None when it is not blocked."""
        entry = self._windows.get(client)
        if entry is None:
            return None
        started, count = entry
        remaining = started + self.window_s - self.clock()
        if remaining <= 0:
            del self._windows[client]
            return None
        return max(1, math.ceil(remaining)) if count >= self.max_failures else None

    def failed(self, client: Hashable) -> None:
        now = self.clock()
        started, count = self._windows.get(client, (now, 0))
        if now - started >= self.window_s:
            started, count = now, 0
        self._windows.pop(client, None)  # re-inserted last: the dict stays oldest-first
        if len(self._windows) >= self.max_tracked:
            del self._windows[next(iter(self._windows))]
        self._windows[client] = (started, count + 1)
