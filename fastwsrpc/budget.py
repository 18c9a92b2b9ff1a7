# mypy: disable-error-code="misc"
# (mixins of RpcChannel annotate self as RpcChannel; mypy checks their bodies against it)
"""The budget of one connection, incoming side: starting work, queueing it, refusing it, answering it.

Mixin of :class:`~fastwsrpc.channel.RpcChannel`; the rules are written down in
``channel.py``'s docstring and ``docs/architecture.md``. The rule is HTTP/2's:
bound the work, never stop hearing the peer. Every message the reader starts
holds one unit of ``_active`` and its frame's bytes of ``_bytes`` until its
handler ends; past ``max_pending_requests`` it waits in ``_deferred``, a queue
bounded by messages and (through ``_bytes``) by bytes; past that, a call is
refused with -32001 at once. Every answer holds one of ``_sending`` and its
bytes until the socket takes it. Cancels, answers to our calls, stream credits
and the close are read and acted on whatever the budget says.
"""

from __future__ import annotations

import asyncio
import sys
import types
from contextvars import Context, ContextVar, copy_context
from typing import TYPE_CHECKING, Any, Awaitable, Coroutine, Generator, List, Optional, Tuple, Union

import msgspec

from .errors import JsonRpcErrorCode
from .logger import get_logger
from .protocol import Batch, Invalid, Notification, Request, Response, encode_batch, encode_error
from .transport import TransportClosed

if TYPE_CHECKING:
    from .channel import RpcChannel

logger = get_logger("channel")

_EAGER = sys.version_info >= (3, 12)

#: Seconds a refused caller is told to wait before it tries again (``data.retry_after`` of -32001).
RETRY_AFTER = 0.1
#: Decodes a batch's items as raw JSON slices: counts them without building them.
_count_items = msgspec.json.Decoder(List[msgspec.Raw]).decode

#: The channel whose incoming call (or notification) the current task serves;
#: tasks a handler starts inherit it. An outgoing call made under it is one a
#: running handler waits for: its answer must be read even at a full budget.
HANDLING: ContextVar[Optional[RpcChannel]] = ContextVar("fastwsrpc_handling", default=None)

#: One message of a run: the message and the bytes of its frame (held until its handler ends).
Work = Tuple[Union[Request, Notification], int]


class IncomingWork:
    """Mixin: what the reader starts for the peer, and how its answers go out."""

    def _admit(self: RpcChannel, msg: Any, size: int) -> None:
        """A call, a notification or a batch just read: start it, queue it, or refuse it.

        Its frame's bytes are counted from here until its handler ends.
        """
        held = self._bytes
        if self._active < self._max_active and not self._deferred and (not held or held + size <= self._max_bytes):
            self._bytes += size
            self._start(msg, size)
            return
        kind = type(msg)
        deferred = self._deferred
        if len(deferred) < self._max_queued and (not self._bytes or self._bytes + size <= self._max_bytes):
            deferred.append((msg, size))
            self._bytes += size
            if kind is Request and _hashable(msg.id):
                self._by_id[msg.id] = None  # queued: $/cancelRequest takes it out before it starts
            return
        if kind is Request:
            self._refuse(msg.id, size)
        elif kind is Notification:
            self._overflow_notification(msg, size)
        else:
            self._start_batch(msg, 0, over_budget=True)

    def _overflow_notification(self: RpcChannel, msg: Notification, size: int) -> None:
        """A notification past the queue: it has no answer to refuse with.

        It is queued anyway and the reader stops until the queue is back under
        its bound (the one case where handlers being busy stop the reading;
        the keepalive still drops a dead peer). While our own handlers wait
        for answers from this peer the reader cannot stop (they would never
        come): the notification is dropped then, with a warning.
        """
        if self._nested:
            self._drop(msg.method)
            return
        self._deferred.append((msg, size))
        self._bytes += size
        if not self.overflowed_notifications:
            logger.warning(
                "channel %s (peer %s): notifications past the queue (%d messages); reading stops until it drains",
                self.id,
                self.socket.peer or "?",
                self._max_queued,
            )
        self.overflowed_notifications += 1

    def _start(self: RpcChannel, msg: Any, size: int) -> None:
        """Start a call, a notification or a batch (its bytes are already counted)."""
        kind = type(msg)
        if kind is Notification or (kind is Request and msg.method not in self._stream_names):
            self._active += 1
            if kind is Request and _hashable(msg.id):
                self._by_id[msg.id] = None  # queued: $/cancelRequest takes it out before it starts
            run = self._open_run
            if run is not None:
                run.append((msg, size))
            else:
                self._start_run([(msg, size)])
            return
        self._open_run = None  # what comes after this starts after it (arrival order)
        if kind is Request:
            self._start_stream(msg, size)
        else:
            self._start_batch(msg, size)

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
        cancelled = self._cancelled
        while deferred and self._active < self._max_active and not self._closed:
            msg, size = deferred.popleft()
            if cancelled and type(msg) is Request and _hashable(msg.id) and self._was_cancelled(msg.id):
                self._bytes -= size  # cancelled while it waited: it never starts, nobody is answered
                continue
            self._start(msg, size)
        if self._room is not None:
            self._wake()

    # ------------------------------------------------------ incoming calls
    def _refuse(self: RpcChannel, call_id: Any, size: int) -> None:
        """Past the running budget and its queue: say so at once, with the limit and when to retry."""
        if len(self._deferred) >= self._max_queued:
            limit, value = "max_queued_requests", self._max_queued
            what = f"{self._active} calls running and {len(self._deferred)} queued, the limit is {value}"
        else:
            limit, value = "max_connection_bytes", self._max_bytes
            what = f"{self._bytes} bytes held for this connection, {size} more would pass the limit of {value}"
        if not self.refused_calls:
            logger.warning(
                "channel %s (peer %s): %s; refusing calls with -32001", self.id, self.socket.peer or "?", what
            )
        self.refused_calls += 1
        self._spawn_send(
            encode_error(
                call_id,
                JsonRpcErrorCode.SERVER_OVERLOADED,
                f"Server overloaded: {what}",
                {"limit": limit, "value": value, "retry_after": RETRY_AFTER},
            )
        )

    def _drop(self: RpcChannel, method: str) -> None:
        if not self.dropped_notifications:
            logger.warning(
                "channel %s (peer %s): queue full while our handlers wait for its answers; dropping notifications (%s)",
                self.id,
                self.socket.peer or "?",
                method,
            )
        self.dropped_notifications += 1

    # ------------------------------------------------------ runs of handlers
    # A task per call or notification cost about three times the rest of its
    # handling. So the calls and notifications read in a row share one task, a
    # *run*: it takes each handler's first step in its own copy of the context;
    # most handlers never suspend and are done (and answered) there. A handler
    # that does suspend keeps the run's task for the rest of its life (so
    # asyncio.current_task(), timeouts and task groups see one task throughout,
    # as with a task of its own, and $/cancelRequest or a close cancels just
    # it), and the work after it moves to a new run. A handler that cancels
    # the run's task and returns at once (``current_task().cancel()``) keeps it
    # too: the task ends, and the work after it moves to a new run, so no other
    # call meets that cancellation. Each holds its unit of the budget and its
    # bytes until its handler ends, as a task of its own would.

    def _start_run(self: RpcChannel, run: List[Work]) -> None:
        self._open_run = run
        idle = self._idle_runner
        if idle is not None:
            # A run's task that finished its work without suspending waits for
            # the next run: waking it costs less than a new task.
            self._idle_runner = None
            idle.set_result(run)
            return
        task = self._loop.create_task(self._run_handlers(run))
        # Runs to its end even if the connection closes: nobody awaits an answer.
        # It takes itself out of both sets as it ends (no done callback to schedule;
        # nothing of ours cancels a run before it starts).
        self._tasks.add(task)
        self._notes.add(task)

    def _note_done(self: RpcChannel, size: int) -> None:
        self._active -= 1
        self._bytes -= size
        if self._deferred:
            self._start_deferred()
        elif self._room is not None:
            self._wake()

    async def _run_handlers(self: RpcChannel, first: List[Work]) -> None:
        me = asyncio.current_task()
        try:
            HANDLING.set(self)
            invoke = self._invoke
            by_id = self._by_id
            run: Optional[List[Work]] = first
            while run is not None:
                i = 0
                while i < len(run):  # the reader may append to the open run meanwhile
                    msg, size = run[i]
                    i += 1
                    call_id = None
                    coro: Coroutine[Any, Any, Any]
                    if type(msg) is Request:
                        call_id = msg.id
                        if self._closed or (self._cancelled and _hashable(call_id) and self._was_cancelled(call_id)):
                            self._note_done(size)  # cancelled before it started, or nobody left to answer
                            continue
                        coro = self._handle_request(msg)
                    else:
                        coro = invoke(msg.method, msg.params, None, True)
                    ctx = copy_context()
                    try:
                        waiting = ctx.run(coro.send, None)
                    except StopIteration:
                        self._note_done(size)
                        if me._must_cancel:  # type: ignore[union-attr]
                            self._hand_off(run, i)  # the handler cancelled "its" task: it ends here, alone
                            return
                        continue
                    except (Exception, asyncio.CancelledError):
                        self._note_done(
                            size
                        )  # invoke answers every failure itself; a handler cancelling itself is done
                        if me._must_cancel:  # type: ignore[union-attr]
                            self._hand_off(run, i)
                            return
                        continue
                    except BaseException:
                        self._note_done(size)
                        self._hand_off(run, i)
                        raise
                    # This handler suspended: it keeps this task; the rest go on in a new run.
                    self._hand_off(run, i)
                    if type(msg) is Request:
                        self._notes.discard(me)  # a call is cancelled at close; a notification runs to its end
                        if _hashable(call_id) and call_id in by_id:
                            by_id[call_id] = me
                    try:
                        await _resume(coro, ctx, waiting)
                    finally:
                        self._note_done(size)
                    return
                if self._open_run is run:
                    self._open_run = None
                if self._idle_runner is not None or self._closed:
                    return  # one waiting task is enough
                # Wait for the next run: waking this task costs less than a new one.
                idle: asyncio.Future[Optional[List[Work]]] = self._loop.create_future()
                self._idle_runner = idle
                run = await idle  # the next run, or None at close
        finally:
            self._tasks.discard(me)
            self._notes.discard(me)

    def _hand_off(self: RpcChannel, run: List[Work], i: int) -> None:
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
            self._bytes += len(data)
            await self._send_spawned(data)

    def _cancel_incoming(self: RpcChannel, params: Any) -> None:
        """The caller gave up on a call: cancel its handler, or drop it if it has not started.

        Either way it is not answered (LSP's ``$/cancelRequest``).
        """
        call_id = params.get("id") if isinstance(params, dict) else (params[0] if params else None)
        if not _hashable(call_id) or call_id not in self._by_id:
            return
        task = self._by_id.pop(call_id)
        if task is not None:
            task.cancel()
        elif len(self._cancelled) < self._max_active + self._max_queued:  # still queued: it will not start
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

    def _start_batch(self: RpcChannel, batch: Batch, size: int, over_budget: bool = False) -> None:
        items = batch.items
        limit = self.settings.max_batch_size
        if len(items) > limit:
            self._bytes -= size
            self._spawn_send(
                encode_error(
                    None,
                    JsonRpcErrorCode.INVALID_REQUEST,
                    f"Invalid Request: batch of {len(items)} items, the limit is {limit}",
                )
            )
            return
        if over_budget:  # past the queue: its calls are refused, its notifications queued as such
            self._spawn(self._handle_batch(items, True), units=0)
        else:
            self._spawn(self._handle_batch(items, False), units=len(items), nbytes=size)

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
                        encode_error(
                            item.id,
                            JsonRpcErrorCode.SERVER_OVERLOADED,
                            "Server overloaded: batch past the queue",
                            {"limit": "max_queued_requests", "value": self._max_queued, "retry_after": RETRY_AFTER},
                        )
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
                    self._overflow_notification(item, 0)
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
        self._bytes += len(data)
        await self._send_spawned(data)

    def _spawn_send(self: RpcChannel, data: bytes, answer: bool = True) -> None:
        """Send a frame nobody awaits: an error reply or a control frame the peer's input caused.

        Counted now, not when its task first runs: the reader may take many
        frames before any task runs, and must see each at once. Only our own
        cancels (``answer=False``) stay out of the budget.
        """
        if answer:
            self._sending += 1
            self._bytes += len(data)
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
            self._bytes -= len(data)
            self._sent += 1
            if self._room is not None:
                self._wake()

    async def _send_quietly(self: RpcChannel, data: bytes) -> None:
        try:
            await self._send_counted(data)
        except TransportClosed:
            pass

    def _spawn(
        self: RpcChannel, coro: Coroutine[Any, Any, Any], units: int = 1, nbytes: int = 0
    ) -> Optional[asyncio.Task[Any]]:
        """Start incoming work as a task that holds ``units`` of the budget (and ``nbytes``) until done."""
        # Counted before it starts, so that a handler running eagerly sees itself
        # in running_count, as it does when it runs as a scheduled task.
        self._active += units
        if _EAGER:
            # Python 3.12+: run the handler's first step now; one that never
            # suspends (most do not) finishes here, never scheduled, never tracked.
            task = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            if task.done():
                # Its units came back before anyone saw them. Queued work is started
                # by _start_deferred's own loop (the only caller while work is
                # queued); starting it from here would recurse once per queued item
                # that finishes at once, and overflow the interpreter stack.
                self._active -= units
                self._bytes -= nbytes
                return None
        else:
            task = self._loop.create_task(coro)
        self._tasks.add(task)
        if units or nbytes:
            task.add_done_callback(lambda t: self._done(t, units, nbytes))
        else:
            task.add_done_callback(self._tasks.discard)
        return task

    def _done(self: RpcChannel, task: asyncio.Task[Any], units: int, nbytes: int) -> None:
        self._tasks.discard(task)
        self._active -= units
        self._bytes -= nbytes
        if self._deferred:
            self._start_deferred()
        elif self._room is not None:
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
