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
* **Subscriptions recover from topic history**: the client re-subscribes with
  the last ``(epoch, offset)`` it saw (see ``docs/guide/sessions.md``).

Other calls in flight when a connection drops fail on the client, as without
sessions. The store lives in the server process; see ``docs/guide/sessions.md``
for what a cluster shares.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Set, Tuple

from .logger import get_logger

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


def is_idempotent_id(call_id: Any) -> bool:
    return type(call_id) is str and call_id.startswith(IDEMPOTENT_PREFIX)


class Session:
    """One client's session: the idempotent calls it made, and where their answers go."""

    __slots__ = (
        "_expiry",
        "_store",
        "answer_bytes",
        "answers",
        "broken",
        "deliver",
        "id",
        "resumed",
        "running",
        "tasks",
        "undelivered",
    )

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self._store = store
        self.id = session_id
        #: Answers of finished idempotent calls, oldest first (evicted by count; bytes are bounded).
        self.answers: OrderedDict[Any, bytes] = OrderedDict()
        self.answer_bytes = 0
        #: Answers produced while the client was away, not yet asked for again.
        self.undelivered: Set[Any] = set()
        #: Idempotent calls still running.
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

    # ------------------------------------------------------------ calls
    def admit(self, call_id: Any) -> Tuple[str, Optional[bytes]]:
        """What to do with an idempotent call: ``("run", None)``, ``("replay", answer)``, ``("wait", None)``,
        or ``("refuse", None)`` past ``max_running`` (their handlers outlive connections: a peer that
        reconnects and calls again and again must not pile them up without bound)."""
        answer = self.answers.get(call_id)
        if answer is not None:
            self.undelivered.discard(call_id)
            return "replay", answer
        if call_id in self.running:
            return "wait", None
        if len(self.running) >= self._store.max_running:
            return "refuse", None
        self.running.add(call_id)
        self._forget_oldest()
        return "run", None

    def finished(self, call_id: Any, answer: Optional[bytes]) -> None:
        """An idempotent call ended: keep its answer (if any) and deliver it if the client is here."""
        self.running.discard(call_id)
        self.tasks.pop(call_id, None)
        if answer is None:
            return
        self.answers[call_id] = answer
        self.answer_bytes += len(answer)
        deliver = self.deliver
        if deliver is None:
            self.undelivered.add(call_id)
        self._evict(self._store.max_answer_bytes, self._store.max_remembered)
        if deliver is not None:
            deliver(answer)

    def cancel(self, call_id: Any) -> bool:
        """The client gave up on an idempotent call running for an earlier connection."""
        task = self.tasks.pop(call_id, None)
        if task is None:
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
        if store.ttl is not None:
            self._expiry = asyncio.get_running_loop().call_later(store.ttl, store._expire, self.id)

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self.running.clear()
        self.answers.clear()
        self.undelivered.clear()
        self.answer_bytes = 0


class SessionStore:
    """The sessions of one server, in memory, each kept ``ttl`` seconds after its client left."""

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
        self._sessions: Dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, requested: Optional[str]) -> Tuple[Optional[Session], bool]:
        """The session for a handshake that asked ``requested`` (``"new"`` or an id): ``(session, resumed)``.

        ``(None, False)`` when sessions are off or none was asked for. An id
        that is unknown, expired or broken gets a new session (``resumed`` False).
        """
        if self.ttl is None or not requested:
            return None, False
        requested = requested.strip()
        old = self._sessions.get(requested) if requested != "new" else None
        if old is not None and not old.broken:
            old.resumed = True
            return old, True
        if old is not None:
            logger.info("session %s lost answers while its client was away: starting a new one", old.id)
            self._expire(old.id)
        if len(self._sessions) >= self.max_sessions and not self._evict_one():
            logger.warning("%d sessions, all with a client connected: this one gets none", len(self._sessions))
            return None, False
        session = Session(self, secrets.token_urlsafe(18))
        self._sessions[session.id] = session
        return session, False

    def _evict_one(self) -> bool:
        """Make room: drop the oldest session whose client is away (a peer asking for new sessions
        again and again must not grow the store without bound)."""
        for session_id, session in self._sessions.items():
            if session.deliver is None:
                self._expire(session_id)
                return True
        return False

    def _expire(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        for session_id in list(self._sessions):
            self._expire(session_id)
