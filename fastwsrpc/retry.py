"""The one way fastwsrpc retries a connection: exponential backoff with jitter, on tenacity.

The client's first connect, its reconnects and the cluster's broker reconnects
all wait the same way: ``min_wait`` doubled at each attempt, capped at
``max_wait``, then 0-25% more so that clients that lost a server together do
not come back in lockstep. They differ only in how many attempts, which
failures are worth another one, what they log and how they sleep.

tenacity is imported when a retrying is built, not with this module: a program
that never connects pays nothing for it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional

if TYPE_CHECKING:
    import tenacity

__all__ = ["backoff_retrying"]


def backoff_retrying(
    *,
    max_attempts: Optional[int],
    min_wait: float,
    max_wait: float,
    jitter: bool = True,
    transient: Callable[[BaseException], bool],
    before_sleep: Optional[Callable[[tenacity.RetryCallState], None]] = None,
    sleep: Optional[Callable[[float], Awaitable[None]]] = None,
) -> tenacity.AsyncRetrying:
    """A tenacity ``AsyncRetrying`` that tries ``max_attempts`` times (``None``: until it succeeds).

    The last failure is raised as it is (``reraise``), not as tenacity's
    ``RetryError``, so callers map it to their own exceptions. A failure that
    ``transient`` refuses is raised at once. ``sleep`` replaces ``asyncio.sleep``
    (a test records the waits instead of sleeping them).
    """
    import tenacity

    # wait_exponential rather than min_wait * 2 ** n: past ~1000 attempts (a
    # broker down for hours) the float overflows, and tenacity caps it at max_wait.
    exponential = tenacity.wait_exponential(multiplier=min_wait, max=max_wait)

    def wait(state: tenacity.RetryCallState) -> float:
        delay = float(exponential(state))
        return delay * (1.0 + 0.25 * random.random()) if jitter else delay

    options: Dict[str, Any] = {}
    if max_attempts is not None:
        options["stop"] = tenacity.stop_after_attempt(max_attempts)
    if before_sleep is not None:
        options["before_sleep"] = before_sleep
    if sleep is not None:
        options["sleep"] = sleep
    return tenacity.AsyncRetrying(wait=wait, retry=tenacity.retry_if_exception(transient), reraise=True, **options)
