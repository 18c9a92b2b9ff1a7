# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: infer_types=True, initializedcheck=False, binding=True
"""Compiled twin of ``_speedups_py.py``: size check, decode + classify, pending table.

The JSON decode itself is msgspec's (already C); what this module removes is the
Python-level dict probing and type checks of classification, and the method
dispatch of the pending table. Behaviour, names and exceptions are exactly those
of the pure twin, for arguments of the wrong type too (read by hand where a C
parameter would convert them otherwise: see ``_limit``, ``_opcode_arg``,
``_not_bytes``); ``tests/test_speedups.py`` and ``tests/test_twins_differential.py``
hold them to it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.dict cimport PyDict_SetItem, PyDict_DelItem, PyDict_Size
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches, PyErr_Occurred
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow, PyLong_Check, PyLong_CheckExact
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.math cimport isfinite
from libc.string cimport memchr, memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    const Py_ssize_t PY_SSIZE_T_MIN
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index)
    bint PyUnicode_IS_ASCII(object o)
    # Resizes a bytes object nobody else holds (in place where the allocator can); NULL and an error on failure.
    int _PyBytes_Resize(PyObject** obj, Py_ssize_t size) except -1
    # The raw call, so that a failed hash can be told apart from a missing key.
    PyObject* _PyDict_GetItemWithError "PyDict_GetItemWithError"(object d, object key)
    # The same call for classification, where any error (a key whose __eq__ raises)
    # propagates, as from the pure twin's dict.get, instead of being swallowed as
    # PyDict_GetItem would.
    PyObject* _get "PyDict_GetItemWithError"(object d, object key) except? NULL

import os
import zlib
from asyncio import InvalidStateError

import msgspec

from fastwsrpc.frames import FrameError
from fastwsrpc.errors import RpcBackpressureError, RpcMessageTooLargeError, RpcTimeoutError
from fastwsrpc.protocol import (
    MAX_ID_LENGTH as _PROTOCOL_MAX_ID_LENGTH,
    Batch,
    ErrorObject,
    Invalid,
    Notification,
    Request,
    Response,
)

cdef object _InvalidStateError = InvalidStateError
cdef double INF = float("inf")
cdef object _json_decode = msgspec.json.Decoder().decode
cdef object _TypeError = TypeError
cdef object _Request = Request
cdef object _Notification = Notification
cdef object _Response = Response
cdef object _Invalid = Invalid
cdef object _Batch = Batch
cdef object _ErrorObject = ErrorObject
cdef Py_ssize_t _MAX_ID_LENGTH = _PROTOCOL_MAX_ID_LENGTH

cdef str _S_ID = "id"
cdef str _S_JSONRPC = "jsonrpc"
cdef str _S_VERSION = "2.0"
cdef str _S_METHOD = "method"
cdef str _S_PARAMS = "params"
cdef str _S_RESULT = "result"
cdef str _S_ERROR = "error"
cdef str _S_CODE = "code"
cdef str _S_MESSAGE = "message"
cdef str _S_DATA = "data"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
cdef int _PARSE_ERROR = -32700
cdef int _INVALID_REQUEST = -32600
cdef int _INTERNAL_ERROR = -32603
# The pure twin's value, tested equal (decode's default).
DEFAULT_MAX_DEPTH = 128


cdef Py_ssize_t _limit(object value) except? -1:
    """A size or a limit argument, as the pure twin's ``_limit`` reads it.

    Any integer (``__index__``; TypeError for a float). A value past what
    Py_ssize_t holds could never be reached, so it is clamped rather than
    refused: 2**70 is as good as no limit. Read here rather than by a
    Py_ssize_t parameter, whose conversion raises OverflowError instead.
    """
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(value):
        value = PyNumber_Index(value)
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow > 0 or v > PY_SSIZE_T_MAX:
        return PY_SSIZE_T_MAX
    if overflow < 0 or v < PY_SSIZE_T_MIN:
        return PY_SSIZE_T_MIN
    return <Py_ssize_t>v


cdef Py_ssize_t _utf8_size(str text):
    """UTF-8 size of ``text`` counted from its code points, without encoding it."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(text), size = n
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef Py_UCS4 ch
    if PyUnicode_IS_ASCII(text):
        return n
    for i in range(n):
        ch = PyUnicode_READ(kind, data, i)
        if ch >= 0x80:
            size += 1 if ch < 0x800 else (2 if ch < 0x10000 else 3)
    return size


cpdef Py_ssize_t frame_size(object frame):
    """Size of a frame in bytes as it travelled (UTF-8 for text)."""
    if type(frame) is str:
        return _utf8_size(<str>frame)
    return len(frame)


cpdef check_size(object frame, object max_size):
    """Refuse a frame over ``max_size`` bytes before anything parses it."""
    return _check_size(frame, _limit(max_size))


cdef object _check_size(object frame, Py_ssize_t max_size):
    cdef Py_ssize_t n
    cdef bint is_text = type(frame) is str
    if is_text:
        n = PyUnicode_GET_LENGTH(frame)
    else:
        n = len(frame)
    if n * 4 <= max_size:
        return None
    if n > max_size or (is_text and frame_size(frame) > max_size):
        raise RpcMessageTooLargeError(
            f"message of {frame_size(frame)} bytes exceeds max_message_size of {max_size} bytes"
        )
    return None


cdef inline str _bad_id(object value):
    cdef type t = type(value)
    if t is int or value is None:
        return ""
    if t is str:
        if PyUnicode_GET_LENGTH(value) > _MAX_ID_LENGTH:
            return f"Invalid Request: id longer than {_MAX_ID_LENGTH} characters"
        return ""
    if t is float and isfinite(PyFloat_AS_DOUBLE(value)):
        return ""
    return "Invalid Request: id must be a string, a number or null"


cdef object _classify_one(object obj):
    cdef PyObject* p
    cdef object call_id, method, params, error, code, message, data
    cdef bint has_id
    cdef str reason
    cdef type pt
    if type(obj) is not dict:
        return _Invalid(None, _INVALID_REQUEST, "Invalid Request: expected an object")
    p = _get(obj, _S_ID)
    has_id = p != NULL
    if has_id:
        call_id = <object>p
        reason = _bad_id(call_id)
        if reason:
            return _Invalid(None, _INVALID_REQUEST, reason)
    else:
        call_id = None
    p = _get(obj, _S_JSONRPC)
    if p == NULL or not (type(<object>p) is str and <str>p == _S_VERSION):
        return _Invalid(call_id, _INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    p = _get(obj, _S_METHOD)
    if p != NULL:
        method = <object>p
        if type(method) is not str:
            return _Invalid(call_id, _INVALID_REQUEST, "Invalid Request: method must be a string")
        p = _get(obj, _S_PARAMS)
        if p == NULL:
            params = None
        else:
            params = <object>p
            pt = type(params)
            if params is not None and pt is not dict and pt is not list:
                return _Invalid(
                    call_id, _INVALID_REQUEST, "Invalid Request: params must be an object or an array"
                )
        if has_id:
            return _Request(method, params, call_id)
        return _Notification(method, params)
    if not has_id:
        return _Invalid(None, _INVALID_REQUEST, "Invalid Request: no method and no id")
    p = _get(obj, _S_ERROR)
    if p == NULL:
        p = _get(obj, _S_RESULT)
        return _Response(call_id, None if p == NULL else <object>p, None)
    error = <object>p
    if _get(obj, _S_RESULT) != NULL:
        return _Response(
            call_id, None, _ErrorObject(_INTERNAL_ERROR, "Invalid response: both result and error", None)
        )
    if type(error) is dict:
        p = _get(error, _S_CODE)
        code = None if p == NULL else <object>p
        p = _get(error, _S_MESSAGE)
        message = None if p == NULL else <object>p
        if type(code) is int and type(message) is str:
            p = _get(error, _S_DATA)
            data = None if p == NULL else <object>p
            return _Response(call_id, None, _ErrorObject(code, message, data))
    return _Response(
        call_id, None, _ErrorObject(_INTERNAL_ERROR, "Invalid response: malformed error", error)
    )


cpdef object classify(object obj):
    """Turn one decoded JSON value into a typed message (a Batch for arrays)."""
    cdef type t = type(obj)
    cdef list items, out
    cdef Py_ssize_t i, n
    if t is dict:
        return _classify_one(obj)
    if t is list:
        items = <list>obj
        n = len(items)
        if n == 0:
            return _Invalid(None, _INVALID_REQUEST, "Invalid Request: empty batch")
        out = [None] * n
        for i in range(n):
            out[i] = _classify_one(items[i])
        return _Batch(out)
    return _Invalid(None, _INVALID_REQUEST, "Invalid Request: expected an object or an array")


ctypedef fused _code_unit:
    uint8_t
    uint16_t
    uint32_t


# What the depth walk stops at; every other code unit is skipped with one test.
cdef enum:
    _PLAIN = 0
    _QUOTE = 1
    _ESCAPE = 2
    _OPEN = 3
    _CLOSE = 4
cdef uint8_t _UNIT_CLASS[256]
cdef int _unit
for _unit in range(256):  # a loop, not [_PLAIN] * 256: Cython's constant folding of that fails on Python 3.9
    _UNIT_CLASS[_unit] = _PLAIN
_UNIT_CLASS[0x22] = _QUOTE  # "
_UNIT_CLASS[0x5C] = _ESCAPE  # backslash
_UNIT_CLASS[0x5B] = _OPEN  # [
_UNIT_CLASS[0x7B] = _OPEN  # {
_UNIT_CLASS[0x5D] = _CLOSE  # ]
_UNIT_CLASS[0x7D] = _CLOSE  # }


cdef inline uint8_t _class_of(_code_unit c) noexcept nogil:
    if _code_unit is uint8_t:
        return _UNIT_CLASS[c]
    else:
        return _UNIT_CLASS[c] if c < 256 else _PLAIN


cdef inline Py_ssize_t _string_end(const _code_unit* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Index of the quote closing the string whose contents start at ``i``, or ``n``.

    Most strings in JSON-RPC are short keys, so a few units are looked at one
    by one; a longer string of bytes is left to memchr (the candidate quote,
    then the backslashes before it), each search starting where the last one
    stopped, so that a long string full of escapes stays linear.
    """
    cdef Py_ssize_t stop = i + 16 if n - i > 16 else n
    cdef const uint8_t* base
    cdef const uint8_t* q
    cdef const uint8_t* b
    while i < stop:
        if s[i] == 0x5C:
            i += 2
        elif s[i] == 0x22:
            return i
        else:
            i += 1
    if _code_unit is uint8_t:
        if i >= n:
            return n
        base = <const uint8_t*>s
        q = <const uint8_t*>memchr(base + i, 0x22, n - i)
        while q != NULL:
            b = <const uint8_t*>memchr(base + i, 0x5C, q - (base + i))
            if b == NULL:
                return q - base
            i = (b - base) + 2
            if i > q - base:  # that backslash escaped the quote: find the next one
                if i >= n:
                    return n
                q = <const uint8_t*>memchr(base + i, 0x22, n - i)
        return n
    else:
        while i < n:
            if s[i] == 0x5C:
                i += 2
            elif s[i] == 0x22:
                return i
            else:
                i += 1
        return n


cdef bint _nests_deeper(const _code_unit* s, Py_ssize_t n, Py_ssize_t max_depth) noexcept nogil:
    """Whether the frame nests deeper than ``max_depth``, stopping as soon as that is settled.

    Reads a frame exactly as the pure twin's skeleton does: a backslash escapes
    the next unit inside strings and out, an unterminated string runs to the
    end, closers are not floored at zero. The walk is needed only when there
    are more openers than the limit, and ends once the depth so far plus the
    openers still ahead cannot pass it (counting them is a branchless loop
    that the compiler vectorises).
    """
    cdef Py_ssize_t i = 0, j, stop, depth = 0, ahead = 0
    cdef uint8_t k, block
    while i < n:
        # In blocks whose count fits a byte, so that the compiler vectorises the loop
        # 16 or 32 units wide; | 0x20 maps [ to { and nothing else to {.
        stop = i + 240 if n - i > 240 else n
        block = 0
        for j in range(i, stop):
            block += (s[j] | 0x20) == 0x7B
        ahead += block
        i = stop
    if ahead <= max_depth:
        return False
    i = 0
    while i < n:
        k = _class_of(s[i])
        if k == _PLAIN:
            i += 1
        elif k == _QUOTE:
            i = _string_end(s, i + 1, n) + 1
        elif k == _OPEN:
            depth += 1
            if depth > max_depth:
                return True
            ahead -= 1
            i += 1
        elif k == _CLOSE:
            depth -= 1
            if depth + ahead <= max_depth:
                return False
            i += 1
        else:  # backslash
            i += 2
    return False


cdef bint _too_deep(object frame, Py_ssize_t max_depth) except -1:
    cdef int kind
    cdef void* data
    cdef Py_ssize_t n
    if max_depth < 0:
        max_depth = 0
    if type(frame) is str:
        n = PyUnicode_GET_LENGTH(frame)
        kind = PyUnicode_KIND(frame)
        data = PyUnicode_DATA(frame)
        if kind == 1:
            return _nests_deeper(<const uint8_t*>data, n, max_depth)
        if kind == 2:
            return _nests_deeper(<const uint16_t*>data, n, max_depth)
        return _nests_deeper(<const uint32_t*>data, n, max_depth)
    if type(frame) is not bytes:
        frame = bytes(frame)
    return _nests_deeper(<const uint8_t*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), max_depth)


cpdef object decode(object frame, object max_size, object max_depth=DEFAULT_MAX_DEPTH):
    """Size check, depth check, one JSON decode, classification (see the pure twin for why)."""
    cdef Py_ssize_t size_limit = _limit(max_size)
    cdef Py_ssize_t depth_limit = _limit(max_depth)
    _check_size(frame, size_limit)
    try:
        if len(frame) > depth_limit and _too_deep(frame, depth_limit):
            return _Invalid(None, _PARSE_ERROR, f"Parse error: nested deeper than {max(depth_limit, 0)} levels")
        obj = _json_decode(frame)
    except Exception:
        return _Invalid(None, _PARSE_ERROR, "Parse error")
    return classify(obj)


cdef object _no_pickle(object obj):
    # Live state (waiters, a half-read frame) has no meaning in a copy: copy and
    # pickle refuse both twins' objects alike, instead of Cython's auto-pickle
    # sharing the table's dicts with the copy.
    return TypeError(f"cannot pickle {type(obj).__name__!r} object")


cdef PyObject* _lookup(dict d, object key) except? NULL:
    """Borrowed value for ``key``, or NULL; a key that cannot be hashed is just absent.

    As the pure twin's ``except TypeError``: any other error from ``__hash__``
    or ``__eq__`` propagates rather than being swallowed, as PyDict_GetItem would.
    """
    cdef PyObject* p = _PyDict_GetItemWithError(d, key)
    if p == NULL and PyErr_Occurred() != NULL and PyErr_ExceptionMatches(_TypeError):
        PyErr_Clear()
    return p


cdef class PendingTable:
    """Outgoing calls waiting for their answer, by id (see the pure twin's docstring)."""

    cdef dict _futures
    cdef dict _deadlines
    cdef long long _next_id
    cdef Py_ssize_t _max_pending

    def __init__(self, object max_pending):
        self._max_pending = _limit(max_pending)
        self._futures = {}
        self._deadlines = {}
        self._next_id = 0

    @property
    def max_pending(self):
        return self._max_pending

    @max_pending.setter
    def max_pending(self, object value):
        self._max_pending = _limit(value)

    @max_pending.deleter
    def max_pending(self):
        raise AttributeError("max_pending cannot be deleted")

    cpdef long long next_id(self):
        self._next_id += 1
        return self._next_id

    cdef object _full(self):
        return RpcBackpressureError(
            f"{PyDict_Size(self._futures)} calls are pending, the limit is {self._max_pending}; "
            "wait for some to finish or raise max_pending_requests"
        )

    cpdef long long register(self, object future, double deadline=INF) except? -1:
        if PyDict_Size(self._futures) >= self._max_pending:
            raise self._full()
        self._next_id += 1
        cdef object call_id = self._next_id
        PyDict_SetItem(self._futures, call_id, future)
        if deadline != INF:
            PyDict_SetItem(self._deadlines, call_id, deadline)
        return self._next_id

    cpdef add(self, object call_id, object future, double deadline=INF):
        if PyDict_Size(self._futures) >= self._max_pending:
            raise self._full()
        if call_id in self._futures:  # an unhashable id raises the dict's TypeError, as in the pure twin
            raise ValueError(f"call id {call_id!r} is already pending")
        PyDict_SetItem(self._futures, call_id, future)
        if deadline != INF:
            PyDict_SetItem(self._deadlines, call_id, deadline)

    cdef inline object _pop(self, object call_id):
        cdef PyObject* p
        if PyDict_Size(self._futures) == 0:  # as dict.pop, which hashes nothing when empty
            return None
        p = _lookup(self._futures, call_id)
        if p == NULL:
            return None
        future = <object>p
        PyDict_DelItem(self._futures, call_id)
        if PyDict_Size(self._deadlines):
            self._deadlines.pop(call_id, None)  # the pure twin's call, so errors from __eq__ agree too
        return future

    cpdef bint resolve(self, object call_id, object response) except -1:
        future = self._pop(call_id)
        if future is None:
            return False
        try:
            future.set_result(response)
        except _InvalidStateError:
            pass
        return True

    cpdef bint fail(self, object call_id, object exc) except -1:
        future = self._pop(call_id)
        if future is None:
            return False
        try:
            future.set_exception(exc)
        except _InvalidStateError:
            pass
        return True

    cpdef bint discard(self, object call_id) except -1:
        return self._pop(call_id) is not None

    cpdef Py_ssize_t fail_all(self, object make_exc) except -1:
        cdef dict futures = self._futures
        self._futures = {}
        self._deadlines = {}
        for future in futures.values():
            if not future.done():
                future.set_exception(make_exc())
        return PyDict_Size(futures)

    cpdef list expire(self, double now):
        cdef list expired = []
        for cid, deadline in self._deadlines.items():
            if <double>deadline <= now:
                expired.append(cid)
        for cid in expired:
            PyDict_DelItem(self._deadlines, cid)
            future = self._futures.pop(cid)
            if not future.done():
                future.set_exception(RpcTimeoutError(f"no answer to call {cid!r} before its deadline"))
        return expired

    def __len__(self):
        return PyDict_Size(self._futures)

    def __contains__(self, object call_id):
        return _lookup(self._futures, call_id) != NULL

    def __reduce__(self):
        raise _no_pickle(self)


# ---------------------------------------------------------------------------
# WebSocket frames (RFC 6455): the compiled twin of the pure codec (same rules,
# same order, same FrameError reasons; tests/test_codec.py holds both to
# websockets' own parser). Here the header is read from a C pointer, the
# payload is unmasked eight bytes at a time straight into the bytes object
# handed out, and UTF-8 is checked by a small state machine that carries its
# state across fragments, with an eight-bytes-at-a-time ASCII fast path.

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

cdef object _FrameError = FrameError
cdef object _urandom = os.urandom
cdef object _decompressobj = zlib.decompressobj
cdef object _ZlibError = zlib.error
cdef bytes _DEFLATE_TAIL = b"\x00\x00\xff\xff"
# A frame's payload is read into a buffer of its own size up to this many bytes; a larger
# one's buffer grows as its bytes come, so that a header alone never reserves more.
cdef Py_ssize_t _EAGER = 2 * 1024 * 1024
cdef bytes _mask_pool = b""
cdef Py_ssize_t _mask_pos = 4096


cdef inline bint _valid_opcode(long opcode):
    return 0 <= opcode <= 2 or 8 <= opcode <= 10


cdef int _opcode_arg(object opcode) except -1:
    """``opcode`` as a C int: TypeError unless an int, ValueError unless one of the six of RFC 6455 5.2.

    Read here rather than by a C-int parameter, whose conversion would take a
    float (truncated) and raise OverflowError past 32 bits, where the pure twin
    raises TypeError and ValueError.
    """
    cdef int overflow = 0
    cdef long value
    if not PyLong_Check(opcode):
        raise TypeError(f"opcode must be an int, not {type(opcode).__name__}")
    value = PyLong_AsLongAndOverflow(opcode, &overflow)
    if overflow or not _valid_opcode(value):
        raise ValueError(f"invalid opcode {opcode}")
    return <int>value


cdef object _not_bytes(str name, object value):
    # Only bytes (subclasses too), as the pure twin: no buffer of another type is read.
    return TypeError(f"{name} must be bytes, not {type(value).__name__}")


cdef inline bint _sendable_code(int code):
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code < 5000)


cdef void _xor_into(char* dst, const char* src, Py_ssize_t n, const unsigned char* key) noexcept nogil:
    """``dst`` = ``src`` XOR the key repeated: a counted loop over 8-byte words, which the compiler vectorises."""
    cdef uint64_t k8, w
    cdef uint32_t k4
    cdef Py_ssize_t i, words = n >> 3
    memcpy(&k4, key, 4)
    k8 = (<uint64_t>k4 << 32) | k4
    for i in range(words):
        memcpy(&w, src + 8 * i, 8)
        w ^= k8
        memcpy(dst + 8 * i, &w, 8)
    for i in range(words * 8, n):
        dst[i] = src[i] ^ key[i & 3]


cdef bytes _masked_copy(const char* src, Py_ssize_t n, const unsigned char* key):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    _xor_into(PyBytes_AS_STRING(out), src, n, key)
    return out


cpdef bytes apply_mask(object data, object mask):
    if not PyBytes_Check(data):
        raise _not_bytes("data", data)
    if not PyBytes_Check(mask):
        raise _not_bytes("mask", mask)
    if PyBytes_GET_SIZE(mask) != 4:
        raise ValueError("a WebSocket mask is 4 bytes")
    return _masked_copy(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), <const unsigned char*>PyBytes_AS_STRING(mask))


cdef bytes _new_mask():
    global _mask_pool, _mask_pos
    if _mask_pos >= 4096:
        _mask_pool = _urandom(4096)
        _mask_pos = 0
    cdef bytes key = PyBytes_FromStringAndSize(PyBytes_AS_STRING(_mask_pool) + _mask_pos, 4)
    _mask_pos += 4
    return key


cpdef bytes build_frame(object opcode, object payload, bint mask=False, bint fin=True, bint rsv1=False):
    cdef int op = _opcode_arg(opcode)
    if not PyBytes_Check(payload):
        raise _not_bytes("payload", payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    if op >= 8 and (n > 125 or not fin):
        raise ValueError("a control frame is whole and carries at most 125 bytes")
    if rsv1 and not 1 <= op <= 2:
        raise ValueError("only the first frame of a text or binary message is compressed (RSV1)")
    cdef Py_ssize_t header = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef Py_ssize_t total = header + (4 if mask else 0) + n
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef unsigned char bit = 0x80 if mask else 0
    cdef int i
    cdef bytes key
    p[0] = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    if n < 126:
        p[1] = bit | <unsigned char>n
    elif n < 65536:
        p[1] = bit | 126
        p[2] = (n >> 8) & 0xFF
        p[3] = n & 0xFF
    else:
        p[1] = bit | 127
        for i in range(8):
            p[2 + i] = (<uint64_t>n >> (56 - 8 * i)) & 0xFF
    if mask:
        key = _new_mask()
        memcpy(p + header, PyBytes_AS_STRING(key), 4)
        _xor_into(<char*>p + header + 4, PyBytes_AS_STRING(payload), n, p + header)
    else:
        memcpy(p + header, PyBytes_AS_STRING(payload), n)
    return out


cpdef tuple parse_close(object payload):
    if not PyBytes_Check(payload):
        raise _not_bytes("payload", payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    if n == 0:
        return (1005, "")
    if n == 1:
        raise _FrameError(1002, "close frame too short")
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
    cdef int code = (p[0] << 8) | p[1]
    try:
        reason = (<bytes>payload)[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _FrameError(1007, "invalid UTF-8 in the close reason") from None
    if not _sendable_code(code):
        raise _FrameError(1002, f"invalid close code {code}")
    return (code, reason)


cdef struct Utf8State:
    int need  # continuation bytes still expected
    int lo  # range of the next continuation byte
    int hi


cdef inline bint _ascii(const unsigned char* s, Py_ssize_t words) noexcept nogil:
    """Whether ``words`` 8-byte words from ``s`` are all ASCII (an OR of them all, vectorised)."""
    cdef uint64_t acc = 0, w
    cdef Py_ssize_t i
    for i in range(words):
        memcpy(&w, s + 8 * i, 8)
        acc |= w
    return (acc & 0x8080808080808080ULL) == 0


cdef inline bint _utf8_step(Utf8State* st, const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Advance the checker over ``s``; False at the first byte that cannot be UTF-8 (Unicode table 3-7)."""
    cdef Py_ssize_t i = 0
    cdef unsigned char b
    cdef uint64_t w
    while i < n:
        if st.need == 0:
            while i + 256 <= n and _ascii(s + i, 32):  # whole blocks first: a loop without a branch
                i += 256
            while i + 8 <= n:
                memcpy(&w, s + i, 8)
                if w & 0x8080808080808080ULL:
                    break
                i += 8
            if i >= n:
                break
            b = s[i]
            i += 1
            if b < 0x80:
                continue
            if 0xC2 <= b <= 0xDF:
                st.need = 1; st.lo = 0x80; st.hi = 0xBF
            elif b == 0xE0:
                st.need = 2; st.lo = 0xA0; st.hi = 0xBF
            elif b == 0xED:
                st.need = 2; st.lo = 0x80; st.hi = 0x9F
            elif 0xE1 <= b <= 0xEF:
                st.need = 2; st.lo = 0x80; st.hi = 0xBF
            elif b == 0xF0:
                st.need = 3; st.lo = 0x90; st.hi = 0xBF
            elif 0xF1 <= b <= 0xF3:
                st.need = 3; st.lo = 0x80; st.hi = 0xBF
            elif b == 0xF4:
                st.need = 3; st.lo = 0x80; st.hi = 0x8F
            else:
                return False
        else:
            b = s[i]
            i += 1
            if b < st.lo or b > st.hi:
                return False
            st.need -= 1
            st.lo = 0x80
            st.hi = 0xBF
    return True


cdef int _window_bits(object value) except -1:
    """``window_bits`` of FrameParser, as the pure twin reads it: 0 (no compression) to 15; 1 to 7 read as 8."""
    cdef Py_ssize_t bits = _limit(value)
    if not 0 <= bits <= 15:
        raise ValueError(f"window_bits must be between 0 and 15, not {bits}")
    return 8 if 0 < bits < 8 else <int>bits


cdef class FrameParser:
    """Sans-I/O WebSocket reader (see the pure twin's docstring: same contract, permessage-deflate included).

    A frame whose payload is not all in the data at hand is read into the bytes
    object that becomes its payload, piece by piece as the data comes (unmasked
    on the way, text checked on the copy): one copy per byte from the socket's
    data to the message, where a buffer would take two or three. Its rules are
    applied exactly as if it had come whole (see ``_stream``).
    """

    cdef readonly Py_ssize_t max_size
    cdef readonly bint require_mask
    cdef readonly object error
    cdef readonly bint closed
    cdef bytearray _buffer
    cdef list _parts
    cdef int _opcode
    cdef Py_ssize_t _size
    cdef Utf8State _utf8
    cdef Py_ssize_t _checked  # payload bytes of the incomplete text frame already checked
    cdef int _window_bits  # the peer's LZ77 window (permessage-deflate); 0: not negotiated
    cdef bint _no_context_takeover  # the peer's: a fresh decompressor per message
    cdef object _inflater  # zlib's decompressor, made on the first compressed message
    cdef bint _inflating  # the fragmented message under way is compressed
    # The incomplete frame being read into its payload (_big is None: none).
    cdef object _big  # bytes: the payload so far, in a buffer of _big_cap bytes
    cdef Py_ssize_t _big_fill
    cdef Py_ssize_t _big_cap
    cdef Py_ssize_t _big_len  # the frame's payload length
    cdef int _big_b1  # its first header byte
    cdef bint _big_masked
    cdef bint _big_check  # text checked as it comes (the partial check's condition)
    cdef unsigned char _big_key[4]

    def __init__(self, object max_size, object require_mask, object window_bits=0, object no_context_takeover=False):
        self.max_size = _limit(max_size)
        self.require_mask = require_mask  # its truth, read after max_size, as in the pure twin
        self._window_bits = _window_bits(window_bits)
        self._no_context_takeover = no_context_takeover
        self._inflater = None
        self._inflating = False
        self.error = None
        self.closed = False
        self._buffer = bytearray()
        self._parts = []
        self._opcode = 0
        self._size = 0
        self._utf8.need = 0
        self._checked = 0
        self._big = None

    def __reduce__(self):
        raise _no_pickle(self)

    cpdef bint receiving(self):
        return PyByteArray_GET_SIZE(self._buffer) > 0 or self._opcode != 0 or self._big is not None

    cpdef list feed(self, object data):
        cdef list events = []
        cdef Py_ssize_t pos, n, off = 0
        cdef const char* p
        if not PyBytes_Check(data):
            raise _not_bytes("data", data)
        if self.error is not None or self.closed:
            return events
        n = PyBytes_GET_SIZE(data)
        p = PyBytes_AS_STRING(data)
        cdef bint direct = True
        try:
            if self._big is not None:
                # The rest of a frame under way (nothing is buffered while one is).
                off = self._stream(p, n, events)
                if self.closed or off == n:
                    if self.closed:
                        self._buffer = bytearray()
                    return events
            direct = PyByteArray_GET_SIZE(self._buffer) == 0
            if direct:
                # The common case: nothing left over, so parse the chunk where it lies.
                pos = off + self._parse(p + off, n - off, events)
            else:
                self._buffer += data
                n = PyByteArray_GET_SIZE(self._buffer)
                pos = self._parse(PyByteArray_AS_STRING(self._buffer), n, events)
        except FrameError as exc:
            self.error = exc
            self._buffer = bytearray()
            self._parts = []
            self._inflater = None
            self._big = None
            return events
        if self.closed:
            self._buffer = bytearray()
        elif direct:
            if pos < n:
                self._buffer += (<bytes>data)[pos:]
        elif pos:
            del self._buffer[:pos]
        return events

    cdef Py_ssize_t _parse(self, const char* base, Py_ssize_t n, list events) except -1:
        cdef const unsigned char* buf = <const unsigned char*>base
        cdef Py_ssize_t pos = 0, start, end, limit
        cdef unsigned long long length
        cdef int b1, b2, opcode, i
        cdef bint masked
        cdef bytes payload
        while n - pos >= 2:
            b1 = buf[pos]
            b2 = buf[pos + 1]
            opcode = b1 & 0x0F
            if not _valid_opcode(opcode):
                raise _FrameError(1002, "invalid opcode")
            masked = (b2 & 0x80) != 0
            if masked != self.require_mask:
                raise _FrameError(1002, "incorrect masking")
            length = b2 & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (<unsigned long long>buf[start] << 8) | buf[start + 1]
                start += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = 0
                for i in range(8):
                    length = (length << 8) | buf[start + i]
                start += 8
            limit = self.max_size - self._size if self._opcode else self.max_size
            if limit < 0 or length > <unsigned long long>limit:
                if self._opcode:
                    raise _FrameError(
                        1009, f"message over max_size ({self.max_size} bytes): its next frame of {length} bytes "
                        f"passes the {limit} bytes left"
                    )
                raise _FrameError(1009, f"message of {length} bytes exceeds max_size ({self.max_size} bytes)")
            if masked:
                if n - start < 4:
                    break  # the key is not all here: wait for it with the header
                start += 4
            end = start + <Py_ssize_t>length
            if end > n:
                # Read the payload into its own bytes as it comes (see _stream).
                self._big_b1 = b1
                self._big_masked = masked
                if masked:
                    memcpy(self._big_key, buf + start - 4, 4)
                self._big_len = <Py_ssize_t>length
                self._big_fill = 0
                self._big_cap = 0
                # Fail fast on UTF-8 (see the pure twin): what comes of a text frame is checked
                # as it comes. A compressed message is checked once inflated (RSV1, or _inflating).
                self._big_check = not (b1 & 0x70) and (
                    (opcode == 1 and not self._opcode) or (opcode == 0 and self._opcode == 1 and not self._inflating)
                )
                if self._big_check and opcode == 1:
                    self._utf8.need = 0
                self._checked = 0
                self._big = b""
                self._stream(base + start, n - start, events)
                return n
            if masked:
                payload = _masked_copy(base + start, end - start, buf + start - 4)
            else:
                payload = PyBytes_FromStringAndSize(base + start, end - start)
            pos = end
            if b1 == 0x82 and not self._opcode:  # a whole binary message: _frame's own outcome, without the call
                events.append((2, payload))
            elif b1 == 0x81 and not self._opcode:  # a whole text message, likewise
                self._utf8.need = 0
                self._check_text(payload, 0, True)
                events.append((1, payload))
            elif self._frame(b1, payload, 0, events):
                return pos
        return pos

    cdef Py_ssize_t _stream(self, const char* src, Py_ssize_t n, list events) except -1:
        """Copy what ``src`` holds of the frame under way into its payload; the frame's rules once it is whole.

        Returns the bytes taken. The payload's buffer is the frame's size up
        to _EAGER bytes; past that it grows with what comes (a header alone
        reserves no more than _EAGER). Text is checked on the copy, as the
        buffered path checks each incomplete piece: the same error in the same
        ``feed``, the same reason; and since the check runs only where nothing
        else about the frame can be wrong (no reserved bit, the fragment
        expected), checking the last piece before the frame's rules changes no
        outcome.
        """
        cdef Py_ssize_t fill = self._big_fill
        cdef Py_ssize_t take = self._big_len - fill
        cdef unsigned char key[4]
        cdef char* dst
        cdef int i
        cdef bytes payload
        if take > n:
            take = n
        if fill + take > self._big_cap:
            self._reserve(fill + take)
        dst = PyBytes_AS_STRING(self._big) + fill
        if self._big_masked:
            for i in range(4):
                key[i] = self._big_key[(fill + i) & 3]
            _xor_into(dst, src, take, key)
        elif take:
            memcpy(dst, src, take)
        if self._big_check:
            if not _utf8_step(&self._utf8, <const unsigned char*>dst, take):
                self._utf8.need = 0
                raise _FrameError(1007, "invalid UTF-8 in a text message")
            self._checked = fill + take
        fill += take
        self._big_fill = fill
        if fill == self._big_len:
            payload = self._big  # the buffer is the frame's size by now (_reserve)
            self._big = None
            fill = self._checked
            self._checked = 0
            self._frame(self._big_b1, payload, fill, events)
        return take

    cdef int _reserve(self, Py_ssize_t needed) except -1:
        """Make the payload's buffer hold ``needed`` bytes: the whole frame up to _EAGER, else doubling."""
        cdef Py_ssize_t cap = self._big_len
        cdef PyObject* raw
        if cap > _EAGER:
            cap = self._big_cap * 2
            if cap < _EAGER:
                cap = _EAGER
            if cap < needed:
                cap = needed
            if cap > self._big_len:
                cap = self._big_len
        if self._big_cap == 0:
            self._big = PyBytes_FromStringAndSize(NULL, cap)
        else:
            # Ours alone: resized in place where the allocator can (a bytes that nobody has seen yet).
            raw = <PyObject*>self._big
            Py_INCREF(self._big)
            self._big = None
            _PyBytes_Resize(&raw, cap)
            self._big = <object>raw
            Py_DECREF(<object>raw)
        self._big_cap = cap
        return 0

    cdef bint _frame(self, int b1, bytes payload, Py_ssize_t checked, list events) except -1:
        """A whole frame's rules and event (``checked``: its text bytes checked already); True at a close."""
        cdef int opcode = b1 & 0x0F
        cdef Py_ssize_t length = PyBytes_GET_SIZE(payload)
        cdef bint fin, compressed = False
        if b1 & 0x70:
            # RSV1 is permessage-deflate's, on the first frame of a data message only.
            if (b1 & 0x70) != 0x40 or self._window_bits == 0 or not 1 <= opcode <= 2:
                raise _FrameError(1002, "reserved bits must be 0")
            compressed = True
        fin = (b1 & 0x80) != 0
        if opcode >= 8:
            if length > 125:
                raise _FrameError(1002, "control frame too long")
            if not fin:
                raise _FrameError(1002, "fragmented control frame")
            if opcode == 8:
                parse_close(payload)
                # A close ends the stream, a fragmented message under way with it (Autobahn 7.1.5).
                events.append((8, payload))
                self.closed = True
                self._parts = []
                self._opcode = 0
                self._size = 0
                self._inflater = None
                self._inflating = False
                return True
            events.append((opcode, payload))
        elif opcode == 0:
            if not self._opcode:
                raise _FrameError(1002, "unexpected continuation frame")
            if self._inflating:
                payload = self._inflate(payload, fin)
                length = PyBytes_GET_SIZE(payload)
            if self._opcode == 1:
                self._check_text(payload, checked, fin)
            self._parts.append(payload)
            if fin:
                events.append((self._opcode, b"".join(self._parts)))
                self._opcode = 0
                self._size = 0
                self._parts = []
                self._inflating = False
            else:
                self._size += length
        else:
            if self._opcode:
                raise _FrameError(1002, "expected a continuation frame")
            if compressed:
                payload = self._inflate(payload, fin)
                length = PyBytes_GET_SIZE(payload)
                if not fin:
                    self._inflating = True
            if opcode == 1:
                if not checked:
                    self._utf8.need = 0
                self._check_text(payload, checked, fin)
            if fin:
                events.append((opcode, payload))
            else:
                self._opcode = opcode
                self._size = length
                self._parts = [payload]
        return False

    cdef bytes _inflate(self, bytes payload, bint fin):
        """Inflate one frame of a compressed message: at most the bytes ``max_size`` leaves (1009 past them)."""
        cdef object inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = _decompressobj(-self._window_bits)
        cdef Py_ssize_t room = self.max_size - self._size  # inflated bytes the message may still have
        cdef Py_ssize_t cap = room + 1 if room < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX
        cdef bytes data, tail
        try:
            data = inflater.decompress(payload, cap)
            if fin and PyBytes_GET_SIZE(data) <= room:
                # The 4 bytes the sender took off (RFC 7692 7.2.2) end the message's last block.
                tail = inflater.decompress(_DEFLATE_TAIL, cap - PyBytes_GET_SIZE(data))
                if PyBytes_GET_SIZE(tail):
                    data += tail
        except _ZlibError:
            raise _FrameError(1002, "invalid compressed data (permessage-deflate)") from None
        if PyBytes_GET_SIZE(data) > room or inflater.unconsumed_tail:
            raise _FrameError(1009, f"compressed message inflates past max_size ({self.max_size} bytes)")
        if fin and (self._no_context_takeover or inflater.eof):
            self._inflater = None  # the peer starts its next message afresh (a final block ends the stream)
        return data

    cdef int _check_text(self, bytes payload, Py_ssize_t skip, bint final) except -1:
        """Check ``payload`` from ``skip`` on (what came before was checked while the frame was incomplete)."""
        if not _utf8_step(
            &self._utf8, <const unsigned char*>PyBytes_AS_STRING(payload) + skip, PyBytes_GET_SIZE(payload) - skip
        ) or (final and self._utf8.need != 0):
            self._utf8.need = 0
            raise _FrameError(1007, "invalid UTF-8 in a text message")
        return 0
