# mypy: disable-error-code="misc"
# (mixins of RpcChannel annotate self as RpcChannel; mypy checks their bodies against it)
"""The budget of one connection, incoming side: starting work, queueing it, refusing it, answering it.

Mixin of :class:`~fastwsrpc.channel.RpcChannel`; the rules are written down in
``channel.py``'s docstring and ``docs/architecture.md``. Every task started
for the peer holds its units of ``_active`` until done; every answer holds one
of ``_sending`` until the socket takes it; the reader looks at both.
"""

from __future__ import annotations

import asyncio
import sys
import types
from contextvars import Context, ContextVar, copy_context
from typing import TYPE_CHECKING, Any, Awaitable, Coroutine, Generator, List, Optional, Union

import msgspec

from .errors import JsonRpcErrorCode
from .logger import get_logger
from .protocol import Batch, Invalid, Notification, Request, Response, encode_batch, encode_error
from .transport import TransportClosed

if TYPE_CHECKING:
    from .channel import RpcChannel

logger = get_logger("channel")

_EAGER = sys.version_info >= (3, 12)
#: Decodes a batch's items as raw JSON slices: counts them without building them.
_count_items = msgspec.json.Decoder(List[msgspec.Raw]).decode

#: The channel whose incoming call (or notification) the current task serves;
#: tasks a handler starts inherit it. An outgoing call made under it is one a
#: running handler waits for: its answer must be read even at a full budget.
HANDLING: ContextVar[Optional[RpcChannel]] = ContextVar("fastwsrpc_handling", default=None)


class IncomingWork:
    """Mixin: what the reader starts for the peer, and how its answers go out."""

    def _start(self: RpcChannel, msg: Any) -> None:
        """Start a call, a notification or a batch: it holds its share of the budget until done."""
        kind = type(msg)
        if kind is Notification or (kind is Request and msg.method not in self._stream_names):
            self._active += 1
            if kind is Request and _hashable(msg.id):
                self._by_id[msg.id] = None  # queued: $/cancelRequest takes it out before it starts
            run = self._open_run
            if run is not None:
                run.append(msg)
            else:
                self._start_run([msg])
            return
        self._open_run = None  # what comes after this starts after it (arrival order)
        if kind is Request:
            self._start_stream(msg)
        else:
            self._start_batch(msg)

    def _batch_too_big(self: RpcChannel, frame: Union[str, bytes]) -> bool:
        """A long frame that is a batch of more than ``max_batch_size`` items: refuse it undecoded.

        Decoding it first would build every item (100,000 small calls in 7.8 MB
        made +80 MB at peak) only to refuse them all; counting raw items costs
        a few bytes each. Anything unusual falls through to the ordinary decode,
        which answers it.
        """
        start = frame.lstrip()[:1]
        if start != "[" and start != b"[":
            return False
        try:
            count = len(_count_items(frame))
        except Exception:
            return False
        limit = self.settings.max_batch_size
        if count <= limit:
            return False
        self._spawn_send(
            encode_error(
                None, JsonRpcErrorCode.INVALID_REQUEST, f"Invalid Request: batch of {count} items, the limit is {limit}"
            )
        )
        return True

    def _start_deferred(self: RpcChannel) -> None:
        deferred = self._deferred
        while deferred and self._active < self._max_active and not self._closed:
            self._start(deferred.popleft())

    # ------------------------------------------------------ incoming calls
    def _refuse(self: RpcChannel, call_id: Any) -> None:
        """Over the limit while we must keep reading: say so rather than queue without bound."""
        if not self.refused_calls:
            logger.warning(
                "channel %s (peer %s): over its budget while waiting for answers; refusing calls with -32001",
                self.id,
                self.socket.peer or "?",
            )
        self.refused_calls += 1
        self._spawn_send(
            encode_error(
                call_id,
                JsonRpcErrorCode.SERVER_OVERLOADED,
                f"Server overloaded: {self._active} calls in flight, the limit is {self._max_active}",
            )
        )

    def _drop(self: RpcChannel, method: str) -> None:
        if not self.dropped_notifications:
            logger.warning(
                "channel %s (peer %s): budget full while waiting for answers; dropping notifications (%s)",
                self.id,
                self.socket.peer or "?",
                method,
            )
        self.dropped_notifications += 1

    # ------------------------------------------------------ runs of handlers
    # A task per call or notification cost about three times the rest of its
    # handling (50k notifications: 90k/s with a task each, 325k/s without). So
    # the calls and notifications read in a row share one task, a *run*: it
    # takes each handler's first step in its own copy of the context; most
    # handlers never suspend and are done (and answered) there. A handler that
    # does suspend keeps the run's task for the rest of its life (so
    # asyncio.current_task(), timeouts and task groups see one task throughout,
    # as with a task of its own, and $/cancelRequest or a close cancels just
    # it), and the work after it moves to a new run. Each holds one unit of the
    # budget until its handler ends, as a task of its own would.

    def _start_run(self: RpcChannel, run: List[Union[Request, Notification]]) -> None:
        self._open_run = run
        idle = self._idle_runner
        if idle is not None:
            # A run's task that finished its work without suspending waits for
            # the next run: waking it costs less than a new task (0.9 vs 2.3 us).
            self._idle_runner = None
            idle.set_result(run)
            return
        task = self._loop.create_task(self._run_handlers(run))
        # Runs to its end even if the connection closes: nobody awaits an answer.
        # It takes itself out of both sets as it ends (no done callback to schedule;
        # nothing of ours cancels a run before it starts).
        self._tasks.add(task)
        self._notes.add(task)

    def _note_done(self: RpcChannel) -> None:
        self._active -= 1
        if self._deferred:
            self._start_deferred()
        if self._room is not None:
            self._wake()

    async def _run_handlers(self: RpcChannel, first: List[Union[Request, Notification]]) -> None:
        try:
            HANDLING.set(self)
            invoke = self._invoke
            by_id = self._by_id
            run: Optional[List[Union[Request, Notification]]] = first
            while run is not None:
                i = 0
                while i < len(run):  # the reader may append to the open run meanwhile
                    msg = run[i]
                    i += 1
                    call_id = None
                    coro: Coroutine[Any, Any, Any]
                    if type(msg) is Request:
                        call_id = msg.id
                        if self._closed or (self._cancelled and _hashable(call_id) and self._was_cancelled(call_id)):
                            self._note_done()  # cancelled before it started, or nobody left to answer
                            continue
                        coro = self._handle_request(msg)
                    else:
                        coro = invoke(msg.method, msg.params, None, True)
                    ctx = copy_context()
                    try:
                        waiting = ctx.run(coro.send, None)
                    except StopIteration:
                        self._note_done()
                        continue
                    except (Exception, asyncio.CancelledError):
                        self._note_done()  # invoke answers every failure itself; a handler cancelling itself is done
                        continue
                    except BaseException:
                        self._note_done()
                        self._hand_off(run, i)
                        raise
                    # This handler suspended: it keeps this task; the rest go on in a new run.
                    self._hand_off(run, i)
                    if type(msg) is Request:
                        task = asyncio.current_task()
                        self._notes.discard(task)  # a call is cancelled at close; a notification runs to its end
                        if _hashable(call_id) and call_id in by_id:
                            by_id[call_id] = task
                    try:
                        await _resume(coro, ctx, waiting)
                    finally:
                        self._note_done()
                    return
                if self._open_run is run:
                    self._open_run = None
                if self._idle_runner is not None or self._closed:
                    return  # one waiting task is enough
                # Wait for the next run: waking this task costs less than a new one.
                idle: asyncio.Future[Optional[List[Union[Request, Notification]]]] = self._loop.create_future()
                self._idle_runner = idle
                run = await idle  # the next run, or None at close
        finally:
            task = asyncio.current_task()
            self._tasks.discard(task)
            self._notes.discard(task)

    def _hand_off(self: RpcChannel, run: List[Union[Request, Notification]], i: int) -> None:
        """What comes after ``run[i - 1]`` goes on in a run (and a task) of its own."""
        rest = run[i:]
        del run[i:]
        was_open = self._open_run is run
        if rest:
            previous = self._open_run
            self._start_run(rest)
            if not was_open:  # a call came after them: later notifications start after it
                self._open_run = previous
        elif was_open:
            self._open_run = None

    # ------------------------------------------------------ incoming calls, batches
    async def _handle_request(self: RpcChannel, req: Request) -> None:
        try:
            data = await self._invoke(req.method, req.params, req.id)
        finally:
            if self._by_id:
                self._by_id.pop(req.id, None)
        if data is not None:
            self._sending += 1  # _send_answer without its own coroutine: every call's path
            await self._send_spawned(data)

    def _cancel_incoming(self: RpcChannel, params: Any) -> None:
        """The caller gave up on a call: cancel its handler; it will not be answered."""
        call_id = params.get("id") if isinstance(params, dict) else (params[0] if params else None)
        if not _hashable(call_id) or call_id not in self._by_id:
            return
        task = self._by_id.pop(call_id)
        if task is not None:
            task.cancel()
        elif len(self._cancelled) < self._max_active:  # still queued in a run: it will not start
            self._cancelled[call_id] = self._cancelled.get(call_id, 0) + 1

    def _was_cancelled(self: RpcChannel, call_id: Any) -> bool:
        count = self._cancelled.get(call_id)
        if not count:
            return False
        if count == 1:
            del self._cancelled[call_id]
        else:
            self._cancelled[call_id] = count - 1
        return True

    def _start_batch(self: RpcChannel, batch: Batch, over_budget: bool = False) -> None:
        items = batch.items
        limit = self.settings.max_batch_size
        if len(items) > limit:
            self._spawn_send(
                encode_error(
                    None,
                    JsonRpcErrorCode.INVALID_REQUEST,
                    f"Invalid Request: batch of {len(items)} items, the limit is {limit}",
                )
            )
            return
        if over_budget:  # reading on only for our answers, and the queue is full: serve none of it
            self._spawn(self._handle_batch(items, True), units=0)
        else:
            self._spawn(self._handle_batch(items, False), units=len(items))

    async def _handle_batch(self: RpcChannel, items: List[Any], over_budget: bool) -> None:
        HANDLING.set(self)
        waiting: List[Awaitable[Optional[bytes]]] = []
        parts: List[bytes] = []
        invoke = self._invoke
        by_id = self._by_id
        ids: List[Any] = []
        loop = self._loop
        for item in items:
            kind = type(item)
            if kind is Request:
                if over_budget:
                    self.refused_calls += 1
                    parts.append(
                        encode_error(item.id, JsonRpcErrorCode.SERVER_OVERLOADED, "Server overloaded: batch refused")
                    )
                else:
                    # A task of its own, findable by id, so $/cancelRequest can stop this item alone.
                    task = loop.create_task(invoke(item.method, item.params, item.id))
                    waiting.append(task)
                    if _hashable(item.id):
                        by_id[item.id] = task
                        ids.append(item.id)
            elif kind is Notification:
                if over_budget:
                    self._drop(item.method)
                else:
                    waiting.append(invoke(item.method, item.params, None, True))
            elif kind is Invalid:
                parts.append(encode_error(item.id, item.code, item.message))
            elif kind is Response:
                self._pending.resolve(item.id, item)
        if waiting:
            try:
                done = await asyncio.gather(*waiting, return_exceptions=True)
            finally:
                for call_id in ids:
                    by_id.pop(call_id, None)
            for part in done:
                if isinstance(part, bytes):
                    parts.append(part)
                elif isinstance(part, BaseException) and not isinstance(part, asyncio.CancelledError):
                    raise part  # invoke answers every failure itself: this is a bug of ours, not the method's
        if parts:
            await self._send_answer(encode_batch(parts))

    # ------------------------------------------------------------ sending
    async def _send_counted(self: RpcChannel, data: bytes) -> None:
        """Our own frames (calls, notifications) go out through here.

        They are not in the reading budget: a reader that stopped because our
        own sends are slow would stop reading the answers that let them
        finish, and both sides would wait for each other.
        """
        self._outgoing += 1
        try:
            await self._send(data)
        finally:
            self._outgoing -= 1
            self._sent += 1

    async def _send_answer(self: RpcChannel, data: bytes) -> None:
        """Send what the peer caused (an answer, a refusal, an error reply), counted in the budget.

        If the connection is gone, the answer has nobody to go to.
        """
        self._sending += 1
        await self._send_spawned(data)

    def _spawn_send(self: RpcChannel, data: bytes, answer: bool = True) -> None:
        """Send a frame nobody awaits: an error reply (``answer``), or a cancel of ours.

        An answer is counted now, not when its task first runs: the reader may
        take many frames before any task runs, and must see each at once.
        """
        if answer:
            self._sending += 1
            self._spawn(self._send_spawned(data), units=0)
        else:
            self._spawn(self._send_quietly(data), units=0)

    async def _send_spawned(self: RpcChannel, data: bytes) -> None:
        try:
            await self._send(data)
        except TransportClosed:
            pass
        finally:
            self._sending -= 1
            self._sent += 1
            if self._room is not None:
                self._wake()

    async def _send_quietly(self: RpcChannel, data: bytes) -> None:
        try:
            await self._send_counted(data)
        except TransportClosed:
            pass

    def _spawn(self: RpcChannel, coro: Coroutine[Any, Any, Any], units: int = 1) -> Optional[asyncio.Task[Any]]:
        """Start incoming work as a task that holds ``units`` of the budget until done."""
        # Counted before it starts, so that a handler running eagerly sees itself
        # in running_count, as it does when it runs as a scheduled task.
        self._active += units
        if _EAGER:
            # Python 3.12+: run the handler's first step now; one that never
            # suspends (most do not) finishes here, never scheduled, never tracked.
            task = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            if task.done():
                # Its units came back before anyone saw them: the budget is as the
                # caller found it. Queued work is started by _start_deferred's own
                # loop (the only caller while work is queued); starting it from here
                # would recurse once per queued item that finishes at once, and a
                # full queue (max_pending_requests) overflows the interpreter stack.
                self._active -= units
                return None
        else:
            task = self._loop.create_task(coro)
        self._tasks.add(task)
        if units:
            if units == 1:
                task.add_done_callback(self._done_one)
            else:
                task.add_done_callback(lambda t: self._done(t, units))
        else:
            task.add_done_callback(self._tasks.discard)
        return task

    def _done_one(self: RpcChannel, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._active -= 1
        if self._deferred:
            self._start_deferred()
        if self._room is not None:
            self._wake()

    def _done(self: RpcChannel, task: asyncio.Task[Any], units: int) -> None:
        self._tasks.discard(task)
        self._active -= units
        if self._deferred:
            self._start_deferred()
        if self._room is not None:
            self._wake()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], ctx: Context, waiting: Any) -> Generator[Any, None, None]:
    """Go on with a coroutine whose first step already ran, each step in ``ctx``.

    The task running this yields on the coroutine's behalf what it waits for,
    and passes back what the task sends or throws (cancellation), as the task
    would if it ran the coroutine itself.
    """
    while True:
        try:
            yield waiting
        except BaseException as exc:
            try:
                waiting = ctx.run(coro.throw, exc)
            except StopIteration:
                return
            continue
        try:
            waiting = ctx.run(coro.send, None)
        except StopIteration:
            return


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float)) or value is None
