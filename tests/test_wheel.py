"""The timing wheel behind keepalive pings: one timer for every connection, each called once per interval."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Set

from fastwsrpc import wheel as wheel_module
from fastwsrpc.wheel import Wheel, wheel_for


class FakeLoop:
    """Records call_later; the test turns the clock by hand (no real time)."""

    def __init__(self) -> None:
        self.pending: List[Callable[[], None]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        self.pending.append(callback)
        return object()

    def fire(self) -> None:
        callback = self.pending.pop(0)
        callback()


class Member:
    def __init__(self, wheel: Wheel) -> None:
        self.turns = 0
        self.wheel = wheel
        self.bucket: Optional[Set[Any]] = wheel.add(self)
        self.leave_after: Optional[int] = None

    def on_turn(self) -> None:
        self.turns += 1
        if self.leave_after is not None and self.turns >= self.leave_after and self.bucket is not None:
            self.wheel.discard(self, self.bucket)
            self.bucket = None


def test_each_member_is_called_once_per_interval_on_one_timer() -> None:
    loop = FakeLoop()
    wheel = wheel_for(loop, 4.0)  # type: ignore[arg-type]
    assert len(wheel._buckets) == 8 and wheel.tick == 0.5
    members = [Member(wheel) for _ in range(100)]
    assert len(loop.pending) == 1  # one timer, not a hundred
    for _ in range(8 * 3):  # three intervals
        loop.fire()
    assert [m.turns for m in members] == [3] * 100
    assert len(loop.pending) == 1


def test_members_that_join_later_wait_a_whole_interval_and_an_empty_wheel_goes_away() -> None:
    loop = FakeLoop()
    wheel = wheel_for(loop, 2.0)  # type: ignore[arg-type]
    assert len(wheel._buckets) == 4  # turns of 0.5 s
    first = Member(wheel)
    for _ in range(2):
        loop.fire()
    late = Member(wheel)
    loop.fire()
    assert (first.turns, late.turns) == (1, 0)  # n - 1 turns after it joined (the clock's phase adds < 1)
    loop.fire()
    assert (first.turns, late.turns) == (1, 0)
    loop.fire()
    assert (first.turns, late.turns) == (1, 1)
    for _ in range(4):
        loop.fire()
    assert (first.turns, late.turns) == (2, 2)  # then once per interval each
    first.leave_after = late.leave_after = 0
    for _ in range(4):  # each leaves at its next turn; then the wheel stops and unregisters
        if loop.pending:
            loop.fire()
    assert not loop.pending and (id(loop), 2.0) not in wheel_module._wheels
    again = Member(wheel_for(loop, 2.0))  # type: ignore[arg-type]
    assert again.bucket is not None and len(loop.pending) == 1
