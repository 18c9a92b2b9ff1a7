"""Streams: an async generator on one side, an async iterator on the other, with credits.

A method written as an async generator is a stream. The wire is plain JSON-RPC
2.0 (in the spirit of ``eth_subscribe`` and jsonrpsee subscriptions), so any
JSON-RPC client can consume one:

* the caller sends an ordinary request; the answer is ``{"stream": <the request's id>}``;
* each item comes as a notification ``$/stream.item`` ``{"stream": id, "item": ...}``;
* the end comes as ``$/stream.end`` ``{"stream": id}``, or with ``"error": {code,
  message, data}`` when the generator raised;
* the consumer grants credits with ``$/stream.credit`` ``{"stream": id, "credits": n}``
  (``"window": n`` sets the total since the stream's start; our caller sends it right
  after the request);
  a producer holding no credit does not advance its generator, so a consumer that
  stops reading stops the producer and nothing queues on either side;
* the consumer stops a stream with ``$/stream.cancel`` ``{"stream": id}``: the
  generator is closed at once (its ``finally`` runs) and nothing more is sent.

**Durable streams.** A stream whose request id is idempotent (``idem-...``) on a
connection with a session outlives the connection (see :mod:`fastwsrpc.sessions`):
its generator goes on, as far as its credits allow, while the client is away, and
the items the consumer has not given credits back for are kept. The client resumes
it by sending the same request again: the answer is ``{"stream": id, "resumed":
true, "from": n}`` and the items from number ``n`` on follow (those it has, it
drops), then new ones; the consumer's credit window counts from there. An ended
stream is kept for a resume too (its last items and its end), until its session ends.

A peer that never sends credits still gets the first ``INITIAL_CREDITS`` items.
A stream holds one unit of the producer's budget (like a running call) until it
ends, and the consumer's queue never holds more than the credits it granted.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Deque, Dict, List, Optional, Type

from .errors import (
    JsonRpcErrorCode,
    RemoteValueError,
    RpcChannelClosedError,
    RpcError,
    RpcTimeoutError,
    RpcUsageError,
    error_for_code,
)
from .logger import get_logger
from .outgoing import DEFAULT_STREAM_BUFFER, OutgoingCalls
from .protocol import (
    ENCODE_ERRORS,
    STREAM_CANCEL,
    STREAM_CREDIT,
    STREAM_END,
    STREAM_ITEM,
    Request,
    Response,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamItem,
    _is_id,
    encode,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
)
from .runner import HANDLING, HandlerRunner
from .sessions import Session, is_idempotent_id
from .state import ConnectionState
from .transport import TransportClosed
from .typed import convert_result

if TYPE_CHECKING:
    from .outgoing import Params

__all__ = ["STREAM_CANCEL", "STREAM_CREDIT", "STREAM_END", "STREAM_ITEM", "RpcStream", "StreamRegistry"]

logger = get_logger("streams")

INITIAL_CREDITS = 16
#: Ended durable streams a session keeps for a resume, at most (the oldest is forgotten first).
MAX_ENDED_STREAMS = 100
#: Items a durable stream keeps for a resume at most (sent, not credited back): its credit window's cap,
#: whatever window the consumer grants, so a peer that goes away cannot make it buffer without bound.
MAX_REPLAY = 1024
#: Credits kept for streams whose request still waits in the queue, at most.
_MAX_EARLY_CREDITS = 1000
#: Unknown stream ids we told to stop, remembered so each is told once.
_MAX_TOLD_STREAMS = 1024
_ITEM_HEAD = b'{"jsonrpc":"2.0","method":"' + STREAM_ITEM.encode() + b'","params":{"stream":'


class _Durable:
    """What a durable stream keeps to resume on its client's next connection (see the module docstring)."""

    __slots__ = ("acked", "end", "lock", "registry", "replay", "session")

    def __init__(self, registry: StreamRegistry, session: Session) -> None:
        #: The registry of the connection it sends on now (None while its client is away).
        self.registry: Optional[StreamRegistry] = registry
        self.session = session
        #: Frames of the items sent that the consumer has not given credits back for, oldest first.
        self.replay: Deque[bytes] = deque()
        #: How many items the consumer gave credits back for (it consumed them): item ``acked + 1`` is replay[0].
        self.acked = 0
        #: The end frame, once the generator ended.
        self.end: Optional[bytes] = None
        #: Sends in order: a resume's replay before any new item.
        self.lock = asyncio.Lock()


class StreamLane:
    """A stream's side door: a producer that holds an item's JSON already writes the item's frame itself.

    A topic's publication reaches thousands of subscriptions at once: waking each
    one's task to encode its own frame costs more than the publication (see
    :mod:`fastwsrpc.topics`, "Fan-out"). A generator with a ``bind_lane`` method is
    given this object once its stream is answered (not for a durable stream, whose
    items are kept for a resume). :meth:`send` takes a credit like the task would,
    and leaves it the one it counts on: the task, waiting in the generator, takes a
    credit for the item it returns next.
    """

    __slots__ = ("head", "producer")

    def __init__(self, sid: Any, producer: _Producer) -> None:
        #: Everything before the item: ``{"jsonrpc":"2.0","method":"$/stream.item","params":{"stream":<id>,"item":``.
        self.head = b"".join((_ITEM_HEAD, encode(sid), b',"item":'))
        self.producer = producer

    def take(self) -> bool:
        """Take a credit for an item sent through this lane; False (none taken) unless one is spare."""
        producer = self.producer
        if producer.credits < 2:
            return False
        producer.credits -= 1
        producer.sent += 1
        return True

    def give_back(self) -> None:
        """The item of the credit just taken could not be sent after all."""
        producer = self.producer
        producer.credits += 1
        producer.sent -= 1


class _Producer:
    """Our side of a stream the peer consumes: its credits and its task."""

    __slots__ = ("credits", "durable", "sent", "task", "waiter")

    def __init__(self, credits: int) -> None:
        self.credits = credits
        self.sent = 0
        self.task: Optional[asyncio.Task[Any]] = None
        self.waiter: Optional[asyncio.Future[None]] = None
        self.durable: Optional[_Durable] = None

    def grant(self, credits: int, window: bool) -> None:
        # A window counts from the stream's start: items already sent (on the
        # initial credits, before the window arrived) are taken off it.
        self.credits = credits - self.sent if window else self.credits + credits
        durable = self.durable
        if durable is not None and not window and credits > 0:
            # Credits come back for items consumed: they need no replay any more.
            replay = durable.replay
            for _ in range(min(credits, len(replay))):
                replay.popleft()
            durable.acked += credits
        if durable is not None:
            # Every item sent is kept until credited back: the peer's window may not grow that past the bound.
            room = MAX_REPLAY - len(durable.replay)
            if self.credits > room:
                self.credits = room
        waiter = self.waiter
        if waiter is not None and not waiter.done() and self.credits > 0:
            waiter.set_result(None)


class RpcStream:
    """A stream the other side produces: ``async with`` it, or ``async for`` over it.

    ``async for item in channel.stream("ticks", {"n": 5})`` works as it is; with
    ``async with channel.stream(...) as items:`` the stream is also stopped at
    the end of the block however it is left. Breaking out, closing it, a
    timeout between items (``timeout=``) or the connection's end stop the
    producer at once; a producer's exception comes out of the iteration as the
    same remote-error class a call would raise.
    """

    def __init__(
        self,
        registry: StreamRegistry,
        method: str,
        params: Params,
        buffer: int = DEFAULT_STREAM_BUFFER,
        timeout: Optional[float] = None,
        result_type: Optional[Type[Any]] = None,
    ) -> None:
        if buffer < 1:
            raise RpcUsageError("a stream's buffer must be at least 1 item")
        self._registry = registry
        self.method = method
        self._params = params
        self.buffer = buffer
        self.timeout = timeout
        self._result_type = result_type
        #: The stream's id on the wire (its request's id), once opened; set before, for a durable stream.
        self.id: Any = None
        self._items: Deque[Any] = deque()
        self._waiter: Optional[asyncio.Future[None]] = None
        self._consumed = 0
        self._opened = False
        self._ended = False
        self._error: Optional[BaseException] = None
        #: Items received and consumed since the stream started (over every connection, when resumed).
        self.received = 0
        self.consumed = 0
        #: While a resume's answer is on its way: items that came with it, sorted out once it is read.
        self._early: Optional[List[Any]] = None
        #: Replayed items still to come that we have already (see :meth:`_sort_out_resume`).
        self._skip = 0
        #: For a durable stream (an idempotent id, set by the client): the next connection's stream
        #: registry once it is there, or None if there will be none. See :meth:`_take_up`.
        self.reconnect: Optional[Callable[[], Awaitable[Optional[StreamRegistry]]]] = None
        #: How many times it was taken up again on a new connection.
        self.resumes = 0
        #: Whether the other side resumed the stream (rather than starting it), once opened.
        self.resumed = False
        #: Asked again after a lost connection, the other side no longer had it: items would be missed.
        self.lost = False

    # ------------------------------------------------------------ consumer API
    async def __aenter__(self) -> RpcStream:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Any]:
        # An async generator, so that a bare ``async for`` that breaks out
        # closes it (the loop finalises it at once) and the producer stops.
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            if not self._opened:
                await self.open()
            while True:
                try:
                    item = await self.next()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await self.aclose()

    async def open(self) -> None:
        """Send the request and the credit window; wait for the stream's id."""
        response = await self._request(self.timeout, window_first=True)
        if response is None:
            return
        call_id = self.id
        error = response.error
        if error is not None:
            self._finish()
            raise error_for_code(error.code, error.message, error.data, response)
        if not _is_stream_answer(response, call_id):
            self._finish()
            await self._registry.runner.send_quietly(encode_notification(STREAM_CANCEL, {"stream": call_id}))
            raise RpcUsageError(f"{self.method!r} is not a stream on the other side (it answered {response.result!r})")
        if self._early is not None:
            await self._sort_out_resume(response.result)

    async def _take_up(self, registry: StreamRegistry) -> None:
        """A durable stream after a lost connection: ask for it again on ``registry``'s connection.

        The items already here and the counts go on; the answer says from which
        item the other side replays (see :meth:`_sort_out_resume`).
        """
        self._registry = registry
        self._opened = self._ended = False
        self._error = None
        self._early = []
        self._skip = 0
        self.resumes += 1
        try:
            await self.open()
        except (RpcChannelClosedError, TransportClosed) as exc:
            self._finish(exc if isinstance(exc, RpcChannelClosedError) else RpcChannelClosedError(str(exc)))

    async def _sort_out_resume(self, answer: Dict[str, Any]) -> None:
        """A durable stream asked again: drop the replayed items it has, and give back credits the other
        side may not have had (consumed before the drop); or fail if it could not be resumed."""
        early, self._early = self._early or [], None
        if answer.get("resumed") is not True or not isinstance(answer.get("from"), int):
            if self.received:
                self.lost = True
                self._finish(
                    RpcChannelClosedError(
                        f"the connection closed during stream {self.method!r} and the other side could not resume it"
                    )
                )
                await self._registry.runner.send_quietly(encode_notification(STREAM_CANCEL, {"stream": self.id}))
                return
            # Nothing had come yet: a stream started again is the same stream.
            for item in early:
                self._push(item)
            return
        self.resumed = True
        acked = answer["from"] - 1
        # The first replayed items are ones we have already (consumed, or queued here): dropped,
        # whether they came with the answer or come after it.
        self._skip = max(0, self.received - acked)
        for item in early:
            self._push(item)
        self._consumed = 0
        consumed_unacked = self.consumed - acked
        if consumed_unacked > 0:
            await self._registry.runner.send_quietly(
                encode_notification(STREAM_CREDIT, {"stream": self.id, "credits": consumed_unacked})
            )

    async def open_or_answer(self, timeout: Optional[float]) -> Optional[Response]:
        """For a caller that does not know whether ``method`` streams (the CLI): the plain answer, or None.

        None: it is a stream, open, its credit window sent (only now, so that a
        plain method gets nothing extra). ``timeout`` bounds the wait for the answer only.
        """
        response = await self._request(timeout, window_first=False)
        if response is None:
            return None
        if response.error is None and _is_stream_answer(response, self.id):
            window = {"stream": self.id, "window": self.buffer}
            await self._registry.runner.send_counted(encode_notification(STREAM_CREDIT, window))
            return None
        self._finish()  # a plain answer: nothing more comes for this id
        return response

    async def _request(self, timeout: Optional[float], window_first: bool) -> Optional[Response]:
        """Register as the consumer of the request's id, send it, wait for its answer (None if opened already).

        Registered before the request goes out, so that items sent right behind
        the answer find their consumer.
        """
        if self._opened:
            return None
        self._opened = True
        registry = self._registry
        calls = registry.calls
        calls.check_open()
        future = registry.loop.create_future()
        if self.id is None:
            call_id = calls.pending.register(future)
            self.id = call_id
        else:
            call_id = self.id
            calls.pending.add(call_id, future)
        registry.consumers[call_id] = self
        send = registry.runner.send_counted
        try:
            await send(encode_request(call_id, self.method, self._params))
            if window_first:
                await send(encode_notification(STREAM_CREDIT, {"stream": call_id, "window": self.buffer}))
            response: Response = await registry.wait_answer(future, timeout or calls.default_response_timeout)
        except BaseException:
            calls.pending.discard(call_id)
            self._finish()
            raise
        return response

    async def next(self) -> Any:
        """The next item; ``StopAsyncIteration`` at the end; the producer's error as a remote error."""
        items = self._items
        while not items:
            if self._ended:
                error = self._error
                if error is None:
                    raise StopAsyncIteration
                if (
                    self.reconnect is not None
                    and isinstance(error, RpcChannelClosedError)
                    and not self.lost
                    and is_idempotent_id(self.id)
                ):
                    registry = await self.reconnect()
                    if registry is not None:
                        await self._take_up(registry)
                        continue
                raise error
            self._waiter = waiter = self._registry.loop.create_future()
            try:
                if self.timeout:
                    await asyncio.wait_for(waiter, self.timeout)
                else:
                    await waiter
            except asyncio.TimeoutError:
                await self.aclose()
                raise RpcTimeoutError(f"no item of stream {self.method!r} within {self.timeout} s") from None
            finally:
                self._waiter = None
        item = items.popleft()
        self._consumed += 1
        self.consumed += 1
        if self._consumed * 2 >= self.buffer and not self._ended:
            # Credits go back in batches of half the window: one frame per
            # several items, and the producer never waits a round trip for more.
            credits, self._consumed = self._consumed, 0
            await self._registry.runner.send_quietly(
                encode_notification(STREAM_CREDIT, {"stream": self.id, "credits": credits})
            )
        if self._result_type is not None:
            return convert_result(item, self._result_type)
        return item

    async def aclose(self) -> None:
        """Stop the stream: the producer's generator is closed at once; idempotent."""
        if self._ended or not self._opened:
            self._finish()
            return
        self._finish()
        registry = self._registry
        if not registry.state.closed and self.id is not None:
            await registry.runner.send_quietly(encode_notification(STREAM_CANCEL, {"stream": self.id}))

    # ----------------------------------------------------------- from the reader
    def _finish(self, error: Optional[BaseException] = None) -> None:
        if not self._ended:
            self._ended = True
            self._error = error
        self._registry.consumers.pop(self.id, None)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push(self, item: Any) -> bool:
        """An item arrived; False if the producer sent more than its credits (a broken peer).

        Before our window reaches it, a producer may send its ``INITIAL_CREDITS``,
        so that many may wait here even when ``buffer`` is smaller.
        """
        if self._skip:
            self._skip -= 1
            return True
        early = self._early
        if early is not None:  # a resume's answer is not read yet: which items are new is not known yet
            if len(early) >= 2 * max(self.buffer, INITIAL_CREDITS):
                return False
            early.append(item)
            return True
        if len(self._items) >= max(self.buffer, INITIAL_CREDITS):
            return False
        self._items.append(item)
        self.received += 1
        self._wake()
        return True


class StreamRegistry:
    """Both ends of the streams of one connection, and their control messages."""

    __slots__ = (
        "_dispatcher",
        "_early_credits",
        "_send",
        "_token",
        "_told",
        "calls",
        "consumers",
        "loop",
        "producers",
        "runner",
        "state",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state: ConnectionState,
        runner: HandlerRunner,
        calls: OutgoingCalls,
        dispatcher: Any,
        send: Callable[[bytes], Any],
        token: object,
    ) -> None:
        self.loop = loop
        self.state = state
        self.runner = runner
        self.calls = calls
        self._dispatcher = dispatcher
        self._send = send
        self._token = token
        #: Streams we produce, by id.
        self.producers: Dict[Any, _Producer] = {}
        #: Streams we consume, by id.
        self.consumers: Dict[Any, RpcStream] = {}
        self._early_credits: Dict[Any, int] = {}
        self._told: Dict[Any, None] = {}
        runner.stream_names = dispatcher.stream_names
        runner.start_stream = self.start_stream

    def __len__(self) -> int:
        return len(self.producers) + len(self.consumers)

    async def wait_answer(self, future: asyncio.Future[Any], timeout: Optional[float]) -> Any:
        """Wait for a stream's answer as ``call`` waits for its own (a running handler's wait counts as nested)."""
        budget = self.runner.budget
        nested = HANDLING.get() is self._token
        if nested:
            budget.nested += 1
            if budget.room is not None:
                budget.wake()
        try:
            if timeout:
                return await asyncio.wait_for(future, timeout)
            return await future
        except asyncio.TimeoutError:
            raise RpcTimeoutError(f"no answer within {timeout} s") from None
        finally:
            if nested:
                budget.nested -= 1

    # ------------------------------------------------------- control messages
    def on_item_params(self, params: Dict[str, Any]) -> bool:
        """A ``$/stream.item``'s params, straight from the decode: a subscription's items are most of
        what a subscriber reads, so they skip the protocol's event (same checks, same outcome).

        True when a consumer took the item: then nothing the channel's budget counts has changed
        (a refusal sends a cancel, which it counts).
        """
        sid = params.get("stream")
        kind = type(sid)
        if kind is int or kind is str:  # the ids we give (on_item's lookup, inlined: one call less per item)
            consumer = self.consumers.get(sid)
            if consumer is not None and consumer._push(params.get("item")):
                return True
            self._refuse_item(sid, consumer)
        elif _is_id(sid):
            self.on_item(sid, params.get("item"))
        return False

    def on_item(self, sid: Any, item: Any) -> None:
        consumer = self.consumers.get(sid)
        if consumer is None or not consumer._push(item):
            self._refuse_item(sid, consumer)

    def _refuse_item(self, sid: Any, consumer: Optional[RpcStream]) -> None:
        """An item nobody here consumes (a stream called as a plain call, say), or one over its
        credits (a broken producer: the stream fails): either way its producer is told to stop, once."""
        if consumer is not None:
            consumer._finish(RpcError(f"stream {consumer.method!r}: the producer sent more items than credits"))
        self._cancel_unknown(sid)

    def on_event(self, event: Any) -> None:
        """A stream control event from the protocol (read whatever the budget says)."""
        kind = type(event)
        if kind is StreamItem:
            self.on_item(event.stream, event.item)
        elif kind is StreamCredit:
            producer = self.producers.get(event.stream)
            if producer is not None:
                producer.grant(event.credits, event.window)
            elif len(self._early_credits) < _MAX_EARLY_CREDITS:
                self._early_credits[event.stream] = event.credits  # its request waits in the queue
        elif kind is StreamEnd:
            consumer = self.consumers.get(event.stream)
            if consumer is not None:
                exc: Optional[BaseException] = None
                if event.malformed:
                    exc = RpcError(f"stream {consumer.method!r}: the producer ended it with a malformed error")
                elif event.error is not None:
                    exc = error_for_code(event.error.code, event.error.message, event.error.data)
                consumer._finish(exc)
        elif kind is StreamCancel:
            producer = self.producers.pop(event.stream, None)
            if producer is not None and producer.durable is not None:
                session = producer.durable.session
                if session.streams.get(event.stream) is producer:
                    del session.streams[event.stream]  # the consumer is done with it: no resume
            if producer is not None and producer.task is not None:
                producer.task.cancel()

    def _cancel_unknown(self, sid: Any) -> None:
        """Tell the producer of ``sid`` to stop: once per stream id, and counted in the budget.

        A peer sending items of streams we never opened must not make us send
        without bound: ids already told are remembered (at most
        ``_MAX_TOLD_STREAMS``, oldest forgotten first), and each cancel counts
        as an answer, so a peer that does not read them stops being read.
        """
        told = self._told
        if sid in told:
            return
        if len(told) >= _MAX_TOLD_STREAMS:
            del told[next(iter(told))]
        told[sid] = None
        self.runner.spawn_send(encode_notification(STREAM_CANCEL, {"stream": sid}))

    # ------------------------------------------------------------ producing
    def start_stream(self, req: Request, size: int = 0) -> None:
        sid = req.id
        runner = self.runner
        session = runner.session
        if session is not None and is_idempotent_id(sid) and sid in session.streams and sid not in self.producers:
            runner.budget.held -= size
            self._resume(sid, session.streams[sid])
            return
        if not _hashable(sid) or sid in self.producers:
            runner.budget.held -= size
            runner.spawn_send(
                encode_error(sid if _hashable(sid) else None, JsonRpcErrorCode.INVALID_REQUEST, "stream id in use")
            )
            return
        producer = _Producer(self._early_credits.pop(sid, INITIAL_CREDITS))
        self.producers[sid] = producer
        if session is not None and is_idempotent_id(sid):
            producer.durable = _Durable(self, session)
            session.streams[sid] = producer
        task = runner.spawn(self._run_stream(req, producer), nbytes=size)
        if task is not None:
            producer.task = task
            runner.by_id[sid] = task
            if producer.durable is not None:
                runner.notes.add(task)  # it outlives this connection (cancelled with its session)

    def _resume(self, sid: Any, producer: _Producer) -> None:
        """The client asks again for a durable stream it had: this connection takes it over."""
        durable = producer.durable
        assert durable is not None
        old = durable.registry
        if old is not None and old is not self and old.producers.get(sid) is producer:
            del old.producers[sid]  # that connection is gone, or about to be
        durable.registry = self
        self.producers[sid] = producer
        # The consumer's window counts from the first item replayed: what is replayed is sent again.
        producer.sent = len(durable.replay)
        producer.credits = self._early_credits.pop(sid, INITIAL_CREDITS) - producer.sent
        if producer.task is not None and not producer.task.done():
            self.runner.by_id[sid] = producer.task
        self.runner.spawn(self._replay(sid, producer, durable), units=0)

    async def _replay(self, sid: Any, producer: _Producer, durable: _Durable) -> None:
        async with durable.lock:
            send = self.runner.send_answer
            await send(encode_result(sid, {"stream": sid, "resumed": True, "from": durable.acked + 1}))
            for frame in list(durable.replay):
                if durable.registry is not self:
                    return
                await send(frame)
            if durable.end is not None and durable.registry is self:
                await send(durable.end)

    async def _emit(self, producer: _Producer, frame: bytes, item: bool) -> None:
        """A durable stream's frame: kept (an item until credited back, the end until the session ends), and sent
        on the connection the stream is on now, if any."""
        durable = producer.durable
        assert durable is not None
        if item:
            durable.replay.append(frame)
        else:
            durable.end = frame
        async with durable.lock:
            registry = durable.registry
            if registry is not None and not registry.state.closed:
                await registry.runner.send_answer(frame)

    async def _run_stream(self, req: Request, producer: _Producer) -> None:
        HANDLING.set(self._token)
        sid = req.id
        durable = producer.durable
        if durable is None:
            send_answer = self.runner.send_answer
            end_send = send_answer
        else:
            send_answer = functools.partial(self._emit, producer, item=True)
            end_send = functools.partial(self._emit, producer, item=False)
        dispatcher = self._dispatcher
        agen: Any = None
        ended = False
        try:
            try:
                agen = dispatcher.open_stream(req.method, req.params)
            except RemoteValueError as exc:
                ended = True
                await self.runner.send_answer(encode_error(sid, exc.code, exc.message, exc.data))
                return
            before_answer = getattr(agen, "before_answer", None)
            if before_answer is not None:
                await before_answer()  # a subscription: until the broker delivers its topics here
            await self.runner.send_answer(encode_result(sid, {"stream": sid}))
            if durable is None:
                bind_lane = getattr(agen, "bind_lane", None)
                if bind_lane is not None:
                    bind_lane(StreamLane(sid, producer))
            loop = self.loop
            while True:
                while producer.credits <= 0:
                    producer.waiter = loop.create_future()
                    try:
                        await producer.waiter
                    finally:
                        producer.waiter = None
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    ended = True
                    await end_send(encode_notification(STREAM_END, {"stream": sid}))
                    return
                except RemoteValueError as exc:
                    ended = True
                    error = {"code": exc.code, "message": exc.message, "data": exc.data}
                    await end_send(encode_notification(STREAM_END, {"stream": sid, "error": error}))
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    ended = True
                    dispatcher.internal_error(None, req.method, exc, True)
                    error = {"code": JsonRpcErrorCode.INTERNAL_ERROR, "message": "Internal error", "data": None}
                    await end_send(encode_notification(STREAM_END, {"stream": sid, "error": error}))
                    return
                producer.credits -= 1
                producer.sent += 1
                try:
                    data = encode_notification(STREAM_ITEM, {"stream": sid, "item": item})
                except ENCODE_ERRORS:
                    ended = True
                    error = {"code": JsonRpcErrorCode.INTERNAL_ERROR, "message": "item could not be encoded as JSON"}
                    await end_send(encode_notification(STREAM_END, {"stream": sid, "error": error}))
                    return
                await send_answer(data)
        finally:
            if durable is not None:
                self._durable_done(sid, producer, durable, ended)
            here = durable.registry or self if durable is not None else self
            if here.producers.get(sid) is producer:
                del here.producers[sid]
            by_id = here.runner.by_id
            if by_id.get(sid) is producer.task:
                by_id.pop(sid, None)
            if agen is not None:
                try:
                    await agen.aclose()  # the generator's finally runs now, not at garbage collection
                except (Exception, asyncio.CancelledError):
                    pass
            if not ended and not here.state.closed and not _cancelled_by_peer(producer):
                try:
                    await here._send(encode_notification(STREAM_END, {"stream": sid}))
                except (TransportClosed, Exception):
                    pass

    def _durable_done(self, sid: Any, producer: _Producer, durable: _Durable, ended: bool) -> None:
        """A durable stream's generator is over: keep it (for a resume) if it ended by itself, else forget it."""
        session = durable.session
        if not ended:  # cancelled: by its consumer, or with its session
            if session.streams.get(sid) is producer:
                del session.streams[sid]
            session.finished(sid, None)
            return
        session.running.discard(sid)
        ended_streams = [key for key, p in session.streams.items() if p.task is not None and p.task.done()]
        for key in ended_streams[: max(0, len(ended_streams) + 1 - MAX_ENDED_STREAMS)]:
            del session.streams[key]

    def close(self) -> None:
        """The connection ended: every consumer ends with the close's error; producers are cancelled with the tasks."""
        for consumer in list(self.consumers.values()):
            consumer._finish(RpcChannelClosedError(f"the connection closed during stream {consumer.method!r}"))
        self.consumers.clear()
        self._early_credits.clear()


def _is_stream_answer(response: Response, call_id: Any) -> bool:
    """Whether an answer opens a stream: ``{"stream": <the request's id>}`` (no plain method gives it by accident)."""
    result = response.result
    return isinstance(result, dict) and result.get("stream") == call_id


def _cancelled_by_peer(producer: _Producer) -> bool:
    task = producer.task
    return task is not None and task.cancelled()


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float)) or value is None
