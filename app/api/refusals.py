"""Pacing of overload refusals, so that clients who retry at once cannot starve the model.

A 503 says "retry after a second". A client that retries at once instead is refused again,
and again: each refusal is cheap, but thousands a second take the event loop's core from
the requests being served, the model slows, fewer requests fit, and more are refused.
Refusals are answered at once up to a budget per second; beyond it each is held for a
short pause first. Rare refusals stay immediate (a load balancer learns at once); a storm
of them is slowed to what the pauses allow, at the cost of a timer each.
"""

from __future__ import annotations

import asyncio
import time


class RefusalPacer:
    def __init__(self, prompt_per_s: float, pause_s: float) -> None:
        self.prompt_per_s = prompt_per_s
        self.pause_s = pause_s
        # A token bucket: one token per prompt refusal, refilled at `prompt_per_s`, holding
        # at most a second's worth, so a burst after a quiet spell is answered at once.
        self._tokens = prompt_per_s
        self._refilled_at = time.monotonic()

    def pause_for_next(self) -> float:
        """Seconds to hold the refusal about to be sent (0: send it now)."""
        now = time.monotonic()
        self._tokens = min(
            self.prompt_per_s, self._tokens + (now - self._refilled_at) * self.prompt_per_s
        )
        self._refilled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return self.pause_s

    async def pace(self) -> None:
        pause = self.pause_for_next()
        if pause:
            await asyncio.sleep(pause)
