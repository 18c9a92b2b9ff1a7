"""The contract both twins keep (``_speedups`` compiled, ``_speedups_py`` pure).

``tests/test_stubs.py`` checks both twins against this file, name by name and
parameter by parameter, and that neither exports anything it leaves out;
``tests/test_twins_differential.py`` checks that they give the same results and
raise the same exceptions for any argument, of the wrong type too.

Beyond the annotations, both twins read arguments alike:

* sizes and limits (``max_size``, ``max_depth``, ``max_pending``): any integer
  (``__index__``; TypeError for a float); past what Py_ssize_t holds, clamped;
* ``deadline`` / ``now``: what ``PyFloat_AsDouble`` takes (TypeError for a str);
* flags (``mask``, ``fin``, ``rsv1``, ``require_mask``, ``no_context_takeover``): their truth;
* ``window_bits``: an integer as a limit is, then 0 to 15 (ValueError otherwise; 1 to 7 read as 8);
* the frame codec's bytes (``payload``, ``data``, ``mask`` of ``apply_mask``):
  ``bytes`` or a subclass, else TypeError ("payload must be bytes, not
  bytearray"); ``decode``, ``check_size`` and ``frame_size`` take str and any
  object msgspec parses;
* ``opcode``: an int (TypeError otherwise) that is one of the six ``OP_*``
  (ValueError otherwise, "invalid opcode -1").

Neither ``PendingTable`` nor ``FrameParser`` can be copied or pickled.
"""

from typing import Any, Callable, Hashable, List, Optional, Tuple, Union

from .frames import FrameError
from .protocol import Message

PARSE_ERROR: int
INVALID_REQUEST: int
INTERNAL_ERROR: int
DEFAULT_MAX_DEPTH: int

def frame_size(frame: Union[str, bytes]) -> int: ...
def check_size(frame: Union[str, bytes], max_size: int) -> None: ...
def classify(obj: Any) -> Message: ...
def decode(frame: Union[str, bytes], max_size: int, max_depth: int = ...) -> Message: ...

class PendingTable:
    max_pending: int  # settable (read as a limit); not deletable
    def __init__(self, max_pending: int) -> None: ...
    def next_id(self) -> int: ...
    def register(self, future: Any, deadline: float = ...) -> int: ...
    def add(self, call_id: Hashable, future: Any, deadline: float = ...) -> None: ...
    # Lookups take any object: one that cannot be a key is simply not pending.
    def resolve(self, call_id: object, response: Any) -> bool: ...
    def fail(self, call_id: object, exc: BaseException) -> bool: ...
    def discard(self, call_id: object) -> bool: ...
    def fail_all(self, make_exc: Callable[[], BaseException]) -> int: ...
    def expire(self, now: float) -> List[Hashable]: ...
    def __len__(self) -> int: ...
    def __contains__(self, call_id: object) -> bool: ...

# WebSocket frames (RFC 6455): the native server's and client's codec.
OP_CONT: int
OP_TEXT: int
OP_BINARY: int
OP_CLOSE: int
OP_PING: int
OP_PONG: int

def apply_mask(data: bytes, mask: bytes) -> bytes: ...
def build_frame(opcode: int, payload: bytes, mask: bool = ..., fin: bool = ..., rsv1: bool = ...) -> bytes: ...
def parse_close(payload: bytes) -> Tuple[int, str]: ...

class FrameParser:
    # Read-only, in both twins (properties there; plain names here, as tests/test_stubs.py reads them).
    max_size: int
    require_mask: bool
    error: Optional[FrameError]
    closed: bool
    def __init__(
        self, max_size: int, require_mask: bool, window_bits: int = ..., no_context_takeover: bool = ...
    ) -> None: ...
    def receiving(self) -> bool: ...
    def feed(self, data: bytes) -> List[Tuple[int, bytes]]: ...
