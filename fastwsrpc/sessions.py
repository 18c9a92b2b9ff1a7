"""Sessions: what a server keeps for a client that reconnects, so that nothing is lost.

A client that asks for one (header ``x-fastwsrpc-session: new``, or the query
parameter ``fastwsrpc_session=new`` for browsers, which cannot set headers)
gets a session id in the answer (the same header, and a first message
``$/session`` ``{"id", "resumed", "ttl"}``). When it reconnects within
``session_ttl`` seconds it presents that id and the session goes on:

* **Idempotent calls run once.** A call whose id is a string starting with
  ``"idem-"`` is one the client will send again if its answer does not
  arrive. The session remembers such ids: a repeat of one that finished is
  answered from the record, a repeat of one still running waits for it, and
  the handler is never run twice. Their handlers go on running while the
  client is away; their answers are kept (at most ``max_answer_bytes`` in all:
  past it the session cannot be resumed, and the client is told so with
  ``resumed: false``).
* **Streams resume** (those opened with an idempotent id): the generator goes on
  while the client is away, as far as its credits allow, and the client takes it
  up where it was (see :mod:`fastwsrpc.streams`).
* **Subscriptions recover from topic history**: the client re-subscribes with
  the last ``(epoch, offset)`` it saw (see ``docs/guide/sessions.md``).

Other calls in flight when a connection drops fail on the client, as without
sessions.

**Across nodes.** With a cluster broker that keeps session records (Redis,
NATS with JetStream, or several in-process nodes), a client may resume on any
node. The node that holds a session writes each idempotent answer to the
broker behind it (never in the call's path), and takes the session over when
its client comes back elsewhere: it asks the previous node, if alive, for the
calls still running there (their answers reach the broker when they end) and
reads which calls have recorded answers. A repeat of one of those is answered
from the broker instead of running again. One case cannot be exactly once:
a node killed after a handler ran but before its answer reached the broker;
that call runs again where the client resumes (it is idempotent: the client
said it is safe). See ``docs/guide/sessions.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict
from typing import AbstractSet, Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from .errors import RpcBrokerUnavailableError
from .logger import get_logger

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore[assignment]

logger = get_logger("sessions")

#: The handshake header that asks for, presents and returns a session.
SESSION_HEADER = "x-fastwsrpc-session"
#: The query parameter browsers use instead of the header.
SESSION_QUERY = "fastwsrpc_session"
#: The first message of a connection with a session.
SESSION_NOTICE = "$/session"
#: Call ids with this prefix are idempotent: repeated after a reconnect, run once.
IDEMPOTENT_PREFIX = "idem-"
DEFAULT_SESSION_TTL = 120.0
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: Idempotent calls a session remembers at most (answered or running).
DEFAULT_MAX_REMEMBERED = 10_000
#: Idempotent calls of one session running at once (they outlive its connections): past it, -32001.
DEFAULT_MAX_RUNNING = 1000
#: Sessions one server keeps at most; past it the one whose client left longest ago goes first.
DEFAULT_MAX_SESSIONS = 100_000
#: How often a node looks for the answer of a call still running on the node its client left
#: (first wait; it doubles up to ``_REMOTE_POLL_MAX``), and how often it checks that node is alive.
_REMOTE_POLL = 0.02
_REMOTE_POLL_MAX = 0.5
_REMOTE_ALIVE_EVERY = 1.0
#: What a session's sets of deferred and moved calls are until it has any (most never do): shared, not
#: one empty set (216 bytes) each.
_NONE: FrozenSet[Any] = frozenset()


def is_idempotent_id(call_id: Any) -> bool:
    return type(call_id) is str and call_id.startswith(IDEMPOTENT_PREFIX)


def record_key(call_id: str) -> str:
    """A call id as a broker key: fixed length and safe on every broker (ids are the peer's input)."""
    return hashlib.blake2b(call_id.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class SharedRecords(Protocol):
    """What a cluster keeps of sessions so that another node can resume them (see ``cluster/sessions.py``)."""

    @property
    def node_id(self) -> str: ...

    async def take(self, session_id: str, ttl: float) -> Optional[str]:
        """Make this node the session's holder; the previous one (``None``: the broker does not know the session)."""

    async def hand_over(self, node_id: str, session_id: str) -> Optional[List[str]]:
        """Ask ``node_id`` to let go of the session: the ids of its calls still running (``None``: the node is gone)."""

    async def recorded(self, session_id: str) -> Set[str]:
        """The keys (:func:`record_key`) of the session's calls whose answers the broker holds."""

    async def get(self, session_id: str, key: str) -> Optional[bytes]: ...

    async def put(self, session_id: str, answers: Dict[str, bytes], dropped: List[str], ttl: float) -> None: ...

    async def alive(self, node_id: str) -> bool: ...


class Session:
    """One client's session: the idempotent calls it made, and where their answers go."""

    __slots__ = (
        "_expiry",
        "_flushing",
        "_store",
        "_unwritten",
        "_watcher",
        "answer_bytes",
        "answers",
        "broken",
        "cleared",
        "deliver",
        "dropped",
        "id",
        "moved",
        "recorded",
        "remote",
        "remote_node",
        "resumed",
        "running",
        "shared",
        "streams",
        "tasks",
        "undelivered",
        "waiting",
    )

    def __init__(self, store: SessionStore, session_id: str, shared: Optional[SharedRecords] = None) -> None:
        self._store = store
        self.id = session_id
        #: Answers of finished idempotent calls, oldest first (evicted by count; bytes are bounded).
        self.answers: OrderedDict[Any, bytes] = OrderedDict()
        self.answer_bytes = 0
        #: Answers produced while the client was away, not yet asked for again.
        self.undelivered: Set[Any] = set()
        #: Idempotent calls still running (here, or on the node this session came from: ``remote``).
        self.running: Set[Any] = set()
        #: Their tasks, for ``$/cancelRequest`` from a later connection and for expiry.
        self.tasks: Dict[Any, asyncio.Task[Any]] = {}
        #: How an answer reaches the client now (the current connection), or None while it is away.
        self.deliver: Optional[Callable[[bytes], None]] = None
        #: Answers were lost (the bound was passed while the client was away): not resumable.
        self.broken = False
        #: Whether the last handshake resumed this session (rather than starting it).
        self.resumed = False
        self._expiry: Optional[asyncio.TimerHandle] = None
        #: The cluster's records, when sessions are shared between nodes.
        self.shared = shared
        #: Keys of calls whose answers the broker holds from another node (checked before they run).
        self.recorded: AbstractSet[str] = _NONE
        #: Calls still running on the node this session came from, and that node.
        self.remote: AbstractSet[Any] = _NONE
        self.remote_node: Optional[str] = None
        #: Repeats put off until the broker says whether they ran: ``call id -> (go on, connection)``.
        self.waiting: Dict[Any, Tuple[Callable[[], None], Optional[Callable[[bytes], None]]]] = {}
        #: Put-off calls found never to have run: the next admission runs them.
        self.cleared: AbstractSet[Any] = _NONE
        #: Handed over to another node: answers go to the broker only.
        self.moved = False
        #: Answers and evictions not yet written to the broker (written behind, in order).
        self._unwritten: Dict[str, bytes] = {}
        self.dropped: List[str] = []
        self._flushing: Optional[asyncio.Task[None]] = None
        self._watcher: Optional[asyncio.Task[None]] = None
        #: Durable streams (ids ``idem-...``), running or ended, by id: see fastwsrpc/streams.py.
        self.streams: Dict[Any, Any] = {}

    # ------------------------------------------------------------ calls
    def admit(self, call_id: Any) -> Tuple[str, Optional[bytes]]:
        """What to do with an idempotent call: ``("run", None)``, ``("replay", answer)``, ``("wait", None)``,
        ``("defer", None)`` (the broker must say first whether it ran on another node: see :meth:`defer`),
        or ``("refuse", None)`` past ``max_running`` (their handlers outlive connections: a peer that
        reconnects and calls again and again must not pile them up without bound). A durable stream's
        repeat is ``"run"``: the stream registry resumes it."""
        if call_id in self.streams:
            return "run", None
        answer = self.answers.get(call_id)
        if answer is not None:
            # Even on the connection its answer went to (the repeat crossed it on the wire): each
            # request gets its response, as JSON-RPC wants; the client takes the first.
            self.undelivered.discard(call_id)
            return "replay", answer
        if call_id in self.cleared:
            self.cleared = self.cleared - {call_id}
            return "run", None
        if call_id in self.remote or call_id in self.waiting:
            return "defer", None  # the latest connection's repeat takes the place of an earlier one
        if call_id in self.running:
            return "wait", None
        if len(self.running) >= self._store.max_running:
            return "refuse", None
        self.running.add(call_id)
        if self.recorded and record_key(call_id) in self.recorded:
            return "defer", None
        self._forget_oldest()
        return "run", None

    def defer(self, call_id: Any, proceed: Callable[[], None]) -> None:
        """A repeat that may have run on another node: answer it from the broker, or ``proceed()`` (admit it again).

        ``proceed`` is called only while the connection that sent the call is
        still the session's; otherwise the call is forgotten, and the client's
        next repeat starts over.
        """
        asked = call_id in self.waiting
        self.waiting[call_id] = (proceed, self.deliver)
        if not asked and call_id not in self.remote:
            self._store._spawn(self._fetch(call_id))

    async def _fetch(self, call_id: Any) -> None:
        key = record_key(call_id)
        answer: Optional[bytes] = None
        assert self.shared is not None
        try:
            answer = await self.shared.get(self.id, key)
        except RpcBrokerUnavailableError as exc:
            logger.warning("session %s: could not read a recorded answer (%s); running the call here", self.id, exc)
        if key in self.recorded:
            self.recorded = self.recorded - {key}
        if answer is not None:
            self.running.discard(call_id)
            self.finished(call_id, answer, record=False)
        else:
            self._clear(call_id)

    def _clear(self, call_id: Any) -> None:
        """A put-off call did not run anywhere: run it here (if its connection is still ours), or forget it."""
        pending = self.waiting.pop(call_id, None)
        if pending is not None and pending[1] is self.deliver and self.deliver is not None:
            self.cleared = self.cleared | {call_id}
            pending[0]()
            self.cleared = self.cleared - {call_id}  # admitted (or refused) by now
        else:
            self.running.discard(call_id)

    def finished(self, call_id: Any, answer: Optional[bytes], record: bool = True) -> None:
        """An idempotent call ended: keep its answer (if any) and deliver it if the client is here."""
        self.running.discard(call_id)
        self.tasks.pop(call_id, None)
        self.waiting.pop(call_id, None)
        if answer is None:
            return
        self.answers[call_id] = answer
        self.answer_bytes += len(answer)
        deliver = self.deliver
        if deliver is None:
            self.undelivered.add(call_id)
        if record and self.shared is not None:
            self._unwritten[record_key(call_id)] = answer
            self._write_behind()
        self._evict(self._store.max_answer_bytes, self._store.max_remembered)
        if deliver is not None:
            deliver(answer)
        if self.moved and not self.running:
            self._store._forget(self)

    def cancel(self, call_id: Any) -> bool:
        """The client gave up on an idempotent call running for an earlier connection."""
        task = self.tasks.pop(call_id, None)
        if task is None:
            if self.waiting.pop(call_id, None) is not None or call_id in self.remote:
                self.remote = self.remote - {call_id}
                self.running.discard(call_id)
                return True
            return False
        self.running.discard(call_id)
        task.cancel()
        return True

    def _forget_oldest(self) -> None:
        self._evict(self._store.max_answer_bytes, self._store.max_remembered)

    def _evict(self, max_bytes: int, max_count: int) -> None:
        """Drop the oldest answers past the bounds: delivered ones first.

        An answer produced while the client was away and dropped before it came
        back is one it may never get: the session is then not resumable
        (``broken``), so the client is told rather than silently given a hole.
        """
        answers = self.answers
        while answers and (self.answer_bytes > max_bytes or len(answers) + len(self.running) > max_count):
            victim = next((key for key in answers if key not in self.undelivered), None)
            if victim is None:
                victim = next(iter(answers))
                self.undelivered.discard(victim)
                self.broken = True
            self.answer_bytes -= len(answers.pop(victim))
            if self.shared is not None:
                key = record_key(victim)
                if self._unwritten.pop(key, None) is None:
                    self.dropped.append(key)

    # ------------------------------------------------------------ the broker
    def _write_behind(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = self._store._spawn(self._flush())

    async def _flush(self) -> None:
        """Write the answers (and evictions) made since the last write, until none are left."""
        shared = self.shared
        assert shared is not None
        ttl = self._store.ttl or DEFAULT_SESSION_TTL
        for _ in range(1000):  # each round writes all there is; bounded all the same
            if not self._unwritten and not self.dropped:
                return
            answers, self._unwritten = self._unwritten, {}
            dropped, self.dropped = self.dropped, []
            try:
                await shared.put(self.id, answers, dropped, ttl)
            except RpcBrokerUnavailableError as exc:
                # Kept here all the same: only a move to another node while the broker is away misses them.
                logger.warning("session %s: %d answers not recorded in the broker: %s", self.id, len(answers), exc)
                return

    async def written(self) -> None:
        """Wait until every answer made so far is in the broker (before this node lets go of the session)."""
        for _ in range(1000):
            flushing = self._flushing
            if flushing is None or flushing.done():
                if not self._unwritten and not self.dropped:
                    return
                self._write_behind()
                continue
            await asyncio.shield(flushing)

    def follow_remote(self, node_id: str, running: List[str]) -> None:
        """Calls still running on ``node_id``, which held this session: their answers come through the broker."""
        self.remote_node = node_id
        self.remote = self.remote | set(running)
        self.running.update(running)
        if self.remote and self._watcher is None:
            self._watcher = self._store._spawn(self._watch_remote())

    async def _watch_remote(self) -> None:
        """Until each call running on the previous node has its answer in the broker, or that node is gone."""
        shared = self.shared
        assert shared is not None and self.remote_node is not None
        loop = asyncio.get_running_loop()
        wait, last_check = _REMOTE_POLL, loop.time()
        try:
            while self.remote:
                await asyncio.sleep(wait)
                wait = min(wait * 2, _REMOTE_POLL_MAX)
                try:
                    for call_id in list(self.remote):
                        answer = await shared.get(self.id, record_key(call_id))
                        if answer is not None and call_id in self.remote:
                            self.remote = self.remote - {call_id}
                            self.finished(call_id, answer, record=False)
                    if self.remote and loop.time() - last_check >= _REMOTE_ALIVE_EVERY:
                        last_check = loop.time()
                        if not await shared.alive(self.remote_node):
                            logger.info(
                                "session %s: node %s is gone with %d calls running; they run here if repeated",
                                self.id,
                                self.remote_node,
                                len(self.remote),
                            )
                            gone, self.remote = self.remote, _NONE
                            for call_id in gone:
                                self._clear(call_id)
                except RpcBrokerUnavailableError:
                    continue  # the next round asks again
        finally:
            self._watcher = None

    # ------------------------------------------------------------ presence
    def attach(self, deliver: Callable[[bytes], None]) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.deliver = deliver

    def detach(self, deliver: Callable[[bytes], None]) -> None:
        """The connection ended: keep the session for ``ttl`` seconds (if it is still this connection's)."""
        if self.deliver is not deliver:
            return
        self.deliver = None
        store = self._store
        if store.ttl is not None and not self.moved:
            self._expiry = asyncio.get_running_loop().call_later(store.ttl, store._expire, self.id)

    def hand_over(self) -> List[str]:
        """Another node takes this session: stop delivering, keep running; the calls still running."""
        self.moved = True
        self.deliver = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        # A generator cannot move: its streams end here, and the client is told on the other node.
        streams, self.streams = self.streams, {}
        for producer in streams.values():
            if producer.task is not None:
                producer.task.cancel()
        return [call_id for call_id in self.running if call_id not in self.remote and call_id not in streams]

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for task in self.tasks.values():
            task.cancel()
        for producer in self.streams.values():
            if producer.task is not None:
                producer.task.cancel()
        self.streams.clear()
        if self._watcher is not None:
            self._watcher.cancel()
        self.tasks.clear()
        self.running.clear()
        self.answers.clear()
        self.undelivered.clear()
        self.waiting.clear()
        self.remote = _NONE
        self.answer_bytes = 0


class SessionStore:
    """The sessions of one server, in memory, each kept ``ttl`` seconds after its client left.

    ``shared``: the cluster's records (see :class:`SharedRecords`), so that a
    client may resume its session on another node; ``None``: this process only.
    """

    def __init__(
        self,
        ttl: Optional[float] = DEFAULT_SESSION_TTL,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_remembered: int = DEFAULT_MAX_REMEMBERED,
        max_running: int = DEFAULT_MAX_RUNNING,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError(f"session_ttl must be > 0 seconds or None (sessions off), got {ttl!r}")
        self.ttl = ttl
        self.max_answer_bytes = max_answer_bytes
        self.max_remembered = max_remembered
        self.max_running = max_running
        self.max_sessions = max_sessions
        self.shared: Optional[SharedRecords] = None
        self._sessions: Dict[str, Session] = {}
        #: Sessions handed over to another node whose handlers still run here.
        self._departed: Dict[str, Session] = {}
        self._tasks: Set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Optional[Session]:
        return self._sessions.get(session_id)

    def open(self, requested: Optional[str]) -> Tuple[Optional[Session], bool]:
        """The session for a handshake that asked ``requested`` (``"new"`` or an id): ``(session, resumed)``.

        ``(None, False)`` when sessions are off or none was asked for. An id
        that is unknown, expired or broken gets a new session (``resumed`` False).
        This process's sessions only: :meth:`open_shared` asks the cluster too.
        """
        if self.ttl is None or not requested:
            return None, False
        requested = requested.strip()
        old = self._sessions.get(requested) if requested != "new" else None
        if old is not None and not old.broken:
            old.resumed = True
            return old, True
        return self._new(old), False

    async def open_shared(self, requested: Optional[str]) -> Tuple[Optional[Session], bool]:
        """:meth:`open`, asking the cluster's records for a session this process does not hold (or no longer).

        The node becomes the session's holder in the broker. If another node
        held it, that node (if alive) hands over its running calls, and the keys
        of the recorded answers are read, so that repeats are answered from the
        broker. With the broker away, this process's sessions only.
        """
        shared = self.shared
        if shared is None or self.ttl is None or not requested:
            return self.open(requested)
        requested = requested.strip()
        if requested == "new":
            session, _ = self.open(requested)
            if session is not None:
                await self._take(session.id)
            return session, False
        local = self._sessions.get(requested)
        try:
            previous = await shared.take(requested, self.ttl)
        except RpcBrokerUnavailableError as exc:
            logger.warning("session %s: the broker is away (%s): this node's sessions only", requested, exc)
            return self.open(requested)
        if previous is None or (previous == shared.node_id and local is not None):
            # The broker does not know it (expired there), or it never left this node.
            if local is not None and not local.broken:
                local.resumed = True
                return local, True
            return self._new(local), False
        # It comes from another node (this node's copy, if any, is stale), or this node let it go
        # (evicted) while the broker kept its records.
        if local is not None:
            self._forget(local)
            local.close()
        session = Session(self, requested, shared)
        try:
            running = await shared.hand_over(previous, requested) if previous != shared.node_id else None
            session.recorded = await shared.recorded(requested)
        except RpcBrokerUnavailableError as exc:
            logger.warning("session %s could not be taken over (%s): starting a new one", requested, exc)
            return self._new(None), False
        if len(self._sessions) >= self.max_sessions and not self._evict_one():
            return None, False
        session.resumed = True
        self._sessions[requested] = session
        if running:
            session.follow_remote(previous, running)
        logger.debug(
            "session %s moved here from node %s (%d calls running there)", requested, previous, len(running or ())
        )
        return session, True

    async def _take(self, session_id: str) -> None:
        assert self.shared is not None and self.ttl is not None
        try:
            await self.shared.take(session_id, self.ttl)
        except RpcBrokerUnavailableError as exc:
            logger.warning("session %s is not known to the broker (%s): it resumes on this node only", session_id, exc)

    async def hand_over(self, session_id: str) -> List[str]:
        """Another node takes ``session_id`` over: its calls still running here (their answers go to the broker)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return []
        running = session.hand_over()
        if running:
            self._departed[session_id] = session
        await session.written()
        if not running:
            session.close()
        return running

    def _new(self, old: Optional[Session]) -> Optional[Session]:
        if old is not None:
            logger.info("session %s lost answers while its client was away: starting a new one", old.id)
            self._expire(old.id)
        if len(self._sessions) >= self.max_sessions and not self._evict_one():
            logger.warning("%d sessions, all with a client connected: this one gets none", len(self._sessions))
            return None
        session = Session(self, secrets.token_urlsafe(18), self.shared)
        self._sessions[session.id] = session
        return session

    def _evict_one(self) -> bool:
        """Make room: drop the oldest session whose client is away (a peer asking for new sessions
        again and again must not grow the store without bound)."""
        for session_id, session in self._sessions.items():
            if session.deliver is None:
                self._expire(session_id)
                return True
        return False

    def _forget(self, session: Session) -> None:
        """Drop a session handed over (or found stale) without cancelling what it runs."""
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        if self._departed.get(session.id) is session:
            del self._departed[session.id]

    def _expire(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self) -> None:
        for session_id in list(self._sessions):
            self._expire(session_id)
        for session in list(self._departed.values()):
            session.close()
        self._departed.clear()
        for task in list(self._tasks):
            task.cancel()
