"""Running what the peer asks for: start, queue or refuse it, cancel it by id, send its answers.

The handler runner of one connection. It moves the counters of its
:class:`~fastwsrpc.budget.Budget` and never stops the reader itself (the rules
are in ``budget.py``). It knows the channel only as an opaque ``token``: the
value of :data:`HANDLING` in its handlers' contexts, by which an outgoing call
knows that a running handler waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from contextvars import Context, ContextVar, copy_context
from operator import length_hint
from types import MappingProxyType
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    FrozenSet,
    Generator,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
    cast,
)

from .budget import RETRY_AFTER, Budget
from .errors import JsonRpcErrorCode
from .logger import get_logger
from .protocol import Invalid, Notification, Request, Response, encode_batch, encode_error
from .sessions import Session, is_idempotent_id
from .state import ConnectionState
from .transport import TransportClosed

logger = get_logger("channel")

_EAGER = sys.version_info >= (3, 12)

#: The connection (its channel) whose incoming call or notification the current
#: task serves; tasks a handler starts inherit it. An outgoing call made under
#: it is one a running handler waits for.
HANDLING: ContextVar[Optional[object]] = ContextVar("fastwsrpc_handling", default=None)

#: One message of a run: the message and the bytes of its frame (held until its handler ends).
Work = Tuple[Union[Request, Notification], int]
Invoke = Callable[..., Coroutine[Any, Any, Optional[bytes]]]

#: A run's item that is a notification: its handler's value is nobody's answer.
_NOTE: Any = object()


def _no_stream(req: Request, size: int) -> None:  # pragma: no cover - replaced by the channel
    raise RuntimeError("no stream registry")


def _no_session(data: bytes) -> None:  # pragma: no cover - replaced by bind
    raise RuntimeError("no session")


#: The ``tasks`` of a runner that runs none: an empty mapping, shared (reads work; ``track`` makes the dict).
NO_TASKS = cast(Dict[asyncio.Task[Any], bool], MappingProxyType({}))

#: The ``cancelled`` of every runner that has had no early cancel: an empty mapping, shared (a
#: dict per idle connection otherwise). Reads work on it; ``cancel`` makes the dict, ``close`` drops it.
NO_CANCELS = cast(Dict[Any, int], MappingProxyType({}))


class _RunsOn:
    """``HandlerRunner.notes``: the tasks of ``tasks`` that run to their end at close, as a set (``add``, ...)."""

    __slots__ = ("_runner",)

    def __init__(self, runner: HandlerRunner) -> None:
        self._runner = runner

    def add(self, task: asyncio.Task[Any]) -> None:
        self._runner.track(task, True)

    def discard(self, task: asyncio.Task[Any]) -> None:
        if task in self._runner.tasks:
            self._runner.tasks[task] = False

    def __contains__(self, task: object) -> bool:
        return bool(self._runner.tasks.get(task))  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter([task for task, runs_on in self._runner.tasks.items() if runs_on])

    def __len__(self) -> int:
        return sum(self._runner.tasks.values())


class HandlerRunner:
    """Starts, queues, refuses, cancels and answers the peer's calls and notifications."""

    __slots__ = (
        "_deliver",
        "_describe",
        "_invoke",
        "_loop",
        "_pending",
        "_send",
        "_state",
        "_token",
        "budget",
        "by_id",
        "cancelled",
        "idle",
        "open_run",
        "session",
        "start_stream",
        "stream_names",
        "tasks",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        budget: Budget,
        state: ConnectionState,
        invoke: Invoke,
        send: Callable[[bytes], Awaitable[None]],
        pending: Any,
        token: object,
        describe: Callable[[], str],
    ) -> None:
        self._loop = loop
        self.budget = budget
        self._state = state
        self._invoke = invoke
        # The run steps an answer's send by hand (coro.send), as it steps handlers:
        # a transport's send is a coroutine function; any other awaitable is wrapped.
        self._send = send if inspect.iscoroutinefunction(send) else _awaiting(send)
        self._pending = pending  # our calls' table: a batch may carry answers to them
        self._token = token
        self._describe = describe
        #: Every task we started for the peer (runs, batches, streams, answers), each with whether
        #: it runs to its end at close (a run serving notifications only: their sender counts on
        #: them) or is cancelled then. One dict, not two sets: 432 bytes less per idle connection.
        self.tasks: Dict[asyncio.Task[Any], bool] = NO_TASKS
        #: Calls in flight by id, for ``$/cancelRequest`` (None: queued or not started yet).
        self.by_id: Dict[Any, Optional[asyncio.Task[Any]]] = {}
        #: Calls cancelled before they started, by id (a count: ids may repeat); made on the first.
        self.cancelled: Dict[Any, int] = NO_CANCELS
        #: A run's task that finished its work without suspending, waiting for the next run.
        self.idle: Optional[asyncio.Future[Any]] = None
        #: The run the reader appends to (calls and notifications read in a row).
        self.open_run: Optional[List[Work]] = None
        #: Stream methods: their calls go to the stream registry (set by it).
        self.stream_names: FrozenSet[str] = frozenset()
        self.start_stream: Callable[[Request, int], None] = _no_stream
        #: The client's session, when it has one: its idempotent calls run once (see sessions.py).
        self.session: Optional[Session] = None
        #: What the session delivers answers through (``spawn_send``, bound once: attach and detach match it).
        self._deliver: Callable[[bytes], None] = _no_session

    @property
    def notes(self) -> _RunsOn:
        """The tasks that run to their end at close, as a set-like view of ``tasks`` (``add``, ``discard``, ``in``)."""
        return _RunsOn(self)

    def track(self, task: asyncio.Task[Any], runs_on: bool) -> None:
        """Keep ``task`` in ``tasks``, with whether it runs to its end at close."""
        tasks = self.tasks
        if tasks is NO_TASKS:
            tasks = self.tasks = {}
        tasks[task] = runs_on

    def bind(self, session: Optional[Session]) -> None:
        """Serve ``session``'s idempotent calls; their answers reach this connection while it lasts."""
        self.session = session
        if session is not None:
            self._deliver = self.spawn_send
            session.attach(self._deliver)

    # ------------------------------------------------------------ admission
    def admit(self, msg: Any, size: int) -> None:
        """A call, a notification or a batch just read: start it, queue it, or refuse it."""
        budget = self.budget
        held = budget.held
        kind = type(msg)
        # What nearly every frame is, started here: ``start`` inlined, one call less per message.
        if kind is Notification:
            if (
                budget.active < budget.max_active
                and not budget.deferred
                and (not held or held + size <= budget.max_bytes)
            ):
                budget.held = held + size
                budget.active += 1
                run = self.open_run
                if run is not None:
                    run.append((msg, size))
                else:
                    self._start_run([(msg, size)])
                return
        elif kind is Request:
            if self.session is not None and is_idempotent_id(msg.id) and self._repeat(msg, size):
                return
            if (
                budget.active < budget.max_active
                and not budget.deferred
                and (not held or held + size <= budget.max_bytes)
                and msg.method not in self.stream_names
            ):
                budget.held = held + size
                budget.active += 1
                self.by_id[msg.id] = None  # decode admits hashable ids only; $/cancelRequest finds it
                run = self.open_run
                if run is not None:
                    run.append((msg, size))
                else:
                    self._start_run([(msg, size)])
                return
        if budget.active < budget.max_active and not budget.deferred and (not held or held + size <= budget.max_bytes):
            budget.held = held + size
            self.start(msg, size)  # a stream or a batch
            return
        if len(budget.deferred) < budget.max_queued and budget.fits(size):
            budget.queue(msg, size)
            budget.held += size
            if kind is Request and _hashable(msg.id):
                self.by_id[msg.id] = None  # queued: $/cancelRequest takes it out before it starts
            return
        if kind is Request:
            if self.session is not None and is_idempotent_id(msg.id):
                self.session.finished(msg.id, None)  # refused: it did not run, a repeat may run it
            self.refuse(msg.id, size)
        elif kind is Notification:
            self.overflow(msg, size)
        else:
            self.spawn(self._handle_batch(msg.items, True), units=0)

    def _repeat(self, msg: Request, size: int) -> bool:
        """An idempotent call: True if it ran (or runs) already for this session, and is answered from there."""
        session = self.session
        assert session is not None
        call_id = msg.id
        action, answer = session.admit(call_id)
        if action == "run":
            return False
        if action == "defer":  # it may have run on the node this session came from: the session finds out
            session.defer(call_id, lambda: self.admit(msg, size))
            return True
        if action == "refuse":
            self.refuse(call_id, 0, len(session.running))
            return True
        if answer is not None:
            self.spawn_send(answer)  # finished while the client was away, or its answer was lost
        return True  # "wait": the running handler's answer comes through the session

    def _never_ran(self, call_id: Any) -> None:
        """A call that will not run after all: a repeat of it (if idempotent) may run it."""
        if self.session is not None and is_idempotent_id(call_id):
            self.session.finished(call_id, None)

    def overflow(self, msg: Notification, size: int) -> None:
        """A notification past the queue: it has no answer to refuse with.

        It is queued anyway and the reader stops until the queue is back under
        its bound; the keepalive still drops a dead peer. While our own
        handlers wait for answers from this peer the reader cannot stop (they
        would never come): the notification is dropped then, with a warning.
        """
        budget = self.budget
        if budget.nested:
            if not budget.dropped_notifications:
                logger.warning(
                    "%s: queue full while our handlers wait for its answers; dropping notifications (%s)",
                    self._describe(),
                    msg.method,
                )
            budget.dropped_notifications += 1
            return
        budget.queue(msg, size)
        budget.held += size
        if not budget.overflowed_notifications:
            logger.warning(
                "%s: notifications past the queue (%d messages); reading stops until it drains",
                self._describe(),
                budget.max_queued,
            )
        budget.overflowed_notifications += 1

    def refuse(self, call_id: Any, size: int, session_limit: Optional[int] = None) -> None:
        """Past the running budget and its queue: say so at once, with the limit and when to retry."""
        budget = self.budget
        if session_limit is not None:
            limit, value = "session_max_running", session_limit
            what = f"{value} idempotent calls of this session are running, the limit"
        elif len(budget.deferred) >= budget.max_queued:
            limit, value = "max_queued_requests", budget.max_queued
            what = f"{budget.active} calls running and {len(budget.deferred)} queued, the limit is {value}"
        else:
            limit, value = "max_connection_bytes", budget.max_bytes
            what = f"{budget.held} bytes held for this connection, {size} more would pass the limit of {value}"
        if not budget.refused_calls:
            logger.warning("%s: %s; refusing calls with -32001", self._describe(), what)
        budget.refused_calls += 1
        data = {"limit": limit, "value": value, "retry_after": RETRY_AFTER}
        self.spawn_send(encode_error(call_id, JsonRpcErrorCode.SERVER_OVERLOADED, f"Server overloaded: {what}", data))

    def start(self, msg: Any, size: int) -> None:
        """Start a call, a notification or a batch (its bytes are already counted)."""
        kind = type(msg)
        if kind is Notification or (kind is Request and msg.method not in self.stream_names):
            self.budget.active += 1
            if kind is Request and _hashable(msg.id):
                self.by_id[msg.id] = None  # not started yet: $/cancelRequest keeps it from starting
            run = self.open_run
            if run is not None:
                run.append((msg, size))
            else:
                self._start_run([(msg, size)])
            return
        self.open_run = None  # what comes after this starts after it (arrival order)
        if kind is Request:
            self.start_stream(msg, size)
        else:
            self.spawn(self._handle_batch(msg.items, False), units=len(msg.items), nbytes=size)

    def start_deferred(self) -> None:
        budget = self.budget
        deferred = budget.deferred
        cancelled = self.cancelled
        state = self._state
        while deferred and budget.active < budget.max_active and not state.closed:
            msg, size = deferred.popleft()
            if cancelled and type(msg) is Request and _hashable(msg.id) and self.was_cancelled(msg.id):
                budget.held -= size  # cancelled while it waited: it never starts, nobody is answered
                self._never_ran(msg.id)
                continue
            self.start(msg, size)
        if budget.room is not None:
            budget.wake()

    # ------------------------------------------------------ runs of handlers
    # A task per call or notification cost about three times the rest of its
    # handling. So the calls and notifications read in a row share one task, a
    # *run*: it takes each handler's first step in its own copy of the context;
    # most handlers never suspend and are done (and answered) there. A handler
    # that does suspend keeps the run's task for the rest of its life (so
    # asyncio.current_task(), timeouts and task groups see one task throughout,
    # as with a task of its own, and $/cancelRequest or a close cancels just
    # it), and the work after it moves to a new run. A handler that cancels the
    # run's task and returns at once keeps it too: the task ends, and the work
    # after it moves to a new run, so no other call meets that cancellation.
    # A call's coroutine is the method's own (``invoke``), not a wrapper that
    # sends its answer: the run sends it, stepping the socket's send by hand,
    # and only an answer the socket does not take at once is counted in
    # ``sending`` (nothing can look at the counters in between). Two coroutines
    # less per call: 2f44ab7's 40,525 instructions per call -> 37,690.

    def _start_run(self, run: List[Work]) -> None:
        self.open_run = run
        idle = self.idle
        if idle is not None:
            # Waking a run's task that waits for the next run costs less than a new task.
            self.idle = None
            idle.set_result(run)
            return
        task = self._loop.create_task(self._run_handlers(run))
        # Runs to its end even if the connection closes: nobody awaits an answer.
        # It takes itself out of ``tasks`` as it ends.
        tasks = self.tasks
        if tasks is NO_TASKS:
            tasks = self.tasks = {}
        tasks[task] = True

    def _note_done(self, size: int) -> None:
        budget = self.budget
        budget.active -= 1
        budget.held -= size
        if budget.deferred:
            self.start_deferred()
        elif budget.room is not None:
            budget.wake()

    async def _run_handlers(self, first: List[Work]) -> None:
        me: Any = asyncio.current_task()
        state = self._state
        budget = self.budget
        try:
            HANDLING.set(self._token)
            invoke = self._invoke
            send = self._send
            by_id = self.by_id
            session = self.session
            run: Optional[List[Work]] = first
            while run is not None:
                # A list's iterator sees what the reader appends to the open run meanwhile;
                # len(run) - length_hint(items) is the index after the current item.
                items = iter(run)
                for msg, size in items:
                    coro: Coroutine[Any, Any, Any]
                    if type(msg) is Request:
                        call_id: Any = msg.id
                        if state.closed or (self.cancelled and self.was_cancelled(call_id)):
                            self._note_done(size)  # cancelled before it started, or nobody left to answer
                            self._never_ran(call_id)
                            continue
                        if session is not None and is_idempotent_id(call_id):
                            coro = self._handle_idempotent(msg)  # answered through the session
                        else:
                            coro = invoke(msg.method, msg.params, call_id)  # answered here
                    else:
                        call_id = _NOTE
                        coro = invoke(msg.method, msg.params, None, True)
                    ctx = copy_context()
                    try:
                        waiting = ctx.run(coro.send, None)
                    except StopIteration as done:
                        # Done at its first step (most handlers): answered and released inline.
                        if call_id is not _NOTE:
                            by_id.pop(call_id, None)
                            if done.value is not None:
                                answer = send(done.value)
                                try:
                                    waiting = answer.send(None)
                                except (Exception, asyncio.CancelledError):
                                    state.sent += 1  # taken at once (or the connection is gone: nobody to answer)
                                else:
                                    # The socket did not take it (the peer does not read): this call
                                    # keeps its unit and this task until it does, as a handler would.
                                    self._hand_off(run, len(run) - length_hint(items))
                                    self.tasks[me] = False
                                    await self._send_rest(answer, ctx, waiting, len(done.value), size)
                                    return
                        budget.active -= 1
                        budget.held -= size
                        if budget.deferred:
                            self.start_deferred()
                        elif budget.room is not None:
                            budget.wake()
                        if me._must_cancel:
                            self._hand_off(run, len(run) - length_hint(items))
                            return  # the handler cancelled "its" task: it ends here, alone
                        continue
                    except (Exception, asyncio.CancelledError):
                        # invoke answers every failure itself; a handler cancelling itself is done
                        if call_id is not _NOTE:
                            by_id.pop(call_id, None)
                        self._note_done(size)
                        if me._must_cancel:
                            self._hand_off(run, len(run) - length_hint(items))
                            return
                        continue
                    except BaseException:
                        if call_id is not _NOTE:
                            by_id.pop(call_id, None)
                        self._note_done(size)
                        self._hand_off(run, len(run) - length_hint(items))
                        raise
                    # This handler suspended: it keeps this task; the rest go on in a new run.
                    self._hand_off(run, len(run) - length_hint(items))
                    await self._rest_of(me, call_id, coro, ctx, waiting, size)
                    return
                if self.open_run is run:
                    self.open_run = None
                if self.idle is not None or state.closed:
                    return  # one waiting task is enough
                idle: asyncio.Future[Optional[List[Work]]] = self._loop.create_future()
                self.idle = idle
                run = await idle  # the next run, or None at close
        finally:
            tasks = self.tasks
            if me in tasks:
                del tasks[me]
                if not tasks:
                    self.tasks = NO_TASKS  # a quiet connection keeps no dict either

    async def _rest_of(self, me: Any, call_id: Any, coro: Any, ctx: Context, waiting: Any, size: int) -> None:
        """The rest of a handler that suspended at its first step, in the run's task (now its own)."""
        try:
            if call_id is _NOTE:
                await _resume(coro, ctx, waiting)
                return
            if self.session is not None and is_idempotent_id(call_id):
                # Runs on while its client is away: the session delivers its answer.
                self.session.tasks[call_id] = me
            else:
                self.tasks[me] = False  # a call is cancelled at close; a notification runs to its end
            by_id = self.by_id
            if call_id in by_id:
                by_id[call_id] = me
            try:
                data = await _resume(coro, ctx, waiting)
            finally:
                by_id.pop(call_id, None)
            if data is not None:
                await self.send_answer(data)
        finally:
            self._note_done(size)

    async def _send_rest(self, answer: Any, ctx: Context, waiting: Any, nbytes: int, size: int) -> None:
        """An answer the socket did not take at once: counted while it waits, as ``send_answer`` counts."""
        budget = self.budget
        budget.sending += 1
        budget.held += nbytes
        try:
            await _resume(answer, ctx, waiting)
        except TransportClosed:
            pass
        finally:
            budget.sending -= 1
            budget.held -= nbytes
            self._state.sent += 1
            self._note_done(size)  # wakes a paused reader too

    def _hand_off(self, run: List[Work], i: int) -> None:
        """What comes after ``run[i - 1]`` goes on in a run (and a task) of its own."""
        rest = run[i:]
        del run[i:]
        was_open = self.open_run is run
        if rest:
            previous = self.open_run
            self._start_run(rest)
            if not was_open:  # a call came after them: later notifications start after it
                self.open_run = previous
        elif was_open:
            self.open_run = None

    async def _handle_idempotent(self, req: Request) -> None:
        """A call of the session's (see sessions.py): it runs once, and the session sends its answer."""
        session = self.session
        assert session is not None
        try:
            data = await self._invoke(req.method, req.params, req.id)
        except BaseException:
            session.finished(req.id, None)  # cancelled: a repeat runs it again
            raise
        finally:
            self.by_id.pop(req.id, None)
        session.finished(req.id, data)  # kept for a repeat, and sent to wherever the client is now

    # ------------------------------------------------------------ cancellation
    def cancel(self, call_id: Any) -> None:
        """The caller gave up on a call: cancel its handler, or keep it from starting (LSP's ``$/cancelRequest``)."""
        if not _hashable(call_id) or call_id not in self.by_id:
            if self.session is not None and is_idempotent_id(call_id):
                self.session.cancel(call_id)  # running for an earlier connection of this client
            return
        task = self.by_id.pop(call_id)
        if task is not None:
            task.cancel()
        elif len(self.cancelled) < self.budget.max_active + self.budget.max_queued:
            if self.cancelled is NO_CANCELS:
                self.cancelled = {}
            self.cancelled[call_id] = self.cancelled.get(call_id, 0) + 1

    def was_cancelled(self, call_id: Any) -> bool:
        count = self.cancelled.get(call_id)
        if not count:
            return False
        if count == 1:
            del self.cancelled[call_id]
        else:
            self.cancelled[call_id] = count - 1
        return True

    # ------------------------------------------------------------ batches
    async def _handle_batch(self, items: List[Any], refused: bool) -> None:
        """Every item of a batch, answered in one array; ``refused``: past the queue, calls get -32001."""
        HANDLING.set(self._token)
        waiting: List[Awaitable[Optional[bytes]]] = []
        parts: List[bytes] = []
        invoke = self._invoke
        by_id = self.by_id
        ids: List[Any] = []
        loop = self._loop
        for item in items:
            kind = type(item)
            if kind is Request:
                if refused:
                    self.budget.refused_calls += 1
                    data = {"limit": "max_queued_requests", "value": self.budget.max_queued, "retry_after": RETRY_AFTER}
                    parts.append(
                        encode_error(
                            item.id, JsonRpcErrorCode.SERVER_OVERLOADED, "Server overloaded: batch past the queue", data
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
                if refused:
                    self.overflow(item, 0)
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
            await self.send_answer(encode_batch(parts))

    # ------------------------------------------------------------ sending
    async def send_counted(self, data: bytes) -> None:
        """Our own frames (calls, notifications, credits) go out through here.

        They are not in the reading budget: a reader that stopped because our
        own sends are slow would stop reading the answers that let them
        finish, and both sides would wait for each other.
        """
        state = self._state
        state.outgoing += 1
        try:
            await self._send(data)
        finally:
            state.outgoing -= 1
            state.sent += 1

    async def send_quietly(self, data: bytes) -> None:
        """One of our own frames whose sender does not care if the connection is gone."""
        try:
            await self.send_counted(data)
        except TransportClosed:
            pass

    async def send_answer(self, data: bytes) -> None:
        """Send what the peer caused (an answer, a refusal, an error reply), counted in the budget.

        If the connection is gone, the answer has nobody to go to.
        """
        budget = self.budget
        budget.sending += 1
        budget.held += len(data)
        await self._send_spawned(data)

    def spawn_send(self, data: bytes, answer: bool = True) -> None:
        """Send a frame nobody awaits: an error reply or a control frame the peer's input caused.

        Counted now, not when its task first runs: the reader may take many
        frames before any task runs, and must see each at once. Only our own
        cancels (``answer=False``) stay out of the budget.
        """
        if answer:
            budget = self.budget
            budget.sending += 1
            budget.held += len(data)
            self.spawn(self._send_spawned(data), units=0)
        else:
            self.spawn(self.send_quietly(data), units=0)

    async def _send_spawned(self, data: bytes) -> None:
        try:
            await self._send(data)
        except TransportClosed:
            pass
        finally:
            budget = self.budget
            budget.sending -= 1
            budget.held -= len(data)
            self._state.sent += 1
            if budget.room is not None:
                budget.wake()

    # ------------------------------------------------------------ tasks
    def spawn(self, coro: Coroutine[Any, Any, Any], units: int = 1, nbytes: int = 0) -> Optional[asyncio.Task[Any]]:
        """Start incoming work as a task that holds ``units`` of the budget (and ``nbytes``) until done."""
        budget = self.budget
        # Counted before it starts, so that a handler running eagerly sees itself
        # in running_count, as it does when it runs as a scheduled task.
        budget.active += units
        if _EAGER:
            # Python 3.12+: the first step runs now; one that never suspends
            # finishes here, never scheduled, never tracked.
            task = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
            if task.done():
                # Its units came back before anyone saw them. Queued work is started
                # by start_deferred's own loop (the only caller while work is
                # queued); starting it from here would recurse once per queued item
                # that finishes at once, and overflow the interpreter stack.
                budget.active -= units
                budget.held -= nbytes
                return None
        else:
            task = self._loop.create_task(coro)
        self.track(task, False)
        if units or nbytes:
            task.add_done_callback(lambda t: self._done(t, units, nbytes))
        else:
            task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        tasks = self.tasks
        if task in tasks:
            del tasks[task]
            if not tasks:
                self.tasks = NO_TASKS

    def _done(self, task: asyncio.Task[Any], units: int, nbytes: int) -> None:
        self._forget(task)
        budget = self.budget
        budget.active -= units
        budget.held -= nbytes
        if budget.deferred:
            self.start_deferred()
        elif budget.room is not None:
            budget.wake()

    def let_go(self) -> None:
        """The run's task that waits for the next run ends (the next run makes one): nothing came for a while.

        Waiting, it is reused by every run a busy connection starts; kept by a
        connection that went quiet, it is a task, its frame and a future (about
        1 kB) for as long as the connection lasts.
        """
        idle, self.idle = self.idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def close(self) -> None:
        """The connection ended: forget queued work, end the waiting run, cancel the calls.

        A notification already read runs to its end (its sender counts on it,
        as fastapi-ws-rpc does); a method may close its own channel, so the
        current task is spared.
        """
        self.by_id.clear()
        self.cancelled = NO_CANCELS
        if self.session is not None:
            self.session.detach(self._deliver)
            for msg, _ in self.budget.deferred:
                if type(msg) is Request:
                    self._never_ran(msg.id)
        self.budget.forget()
        self.let_go()
        current = asyncio.current_task()
        for task, runs_on in list(self.tasks.items()):
            if task is not current and not runs_on:
                task.cancel()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], ctx: Context, waiting: Any) -> Generator[Any, None, Any]:
    """Go on with a coroutine whose first step already ran, each step in ``ctx``; its return value.

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
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting = ctx.run(coro.send, None)
        except StopIteration as done:
            return done.value


def _awaiting(send: Callable[[bytes], Awaitable[None]]) -> Callable[[bytes], Coroutine[Any, Any, None]]:
    """``send`` as a coroutine function (see ``HandlerRunner.__init__``)."""

    async def send_coroutine(data: bytes) -> None:
        await send(data)

    return send_coroutine


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float)) or value is None
