# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: infer_types=True, initializedcheck=False, binding=True
"""Compiled twin of ``_speedups_py.py``: size check, decode + classify, pending table.

The JSON decode itself is msgspec's (already C); what this module removes is the
Python-level dict probing and type checks of classification, and the method
dispatch of the pending table. Behaviour, names and exceptions are exactly those
of the pure twin; ``tests/test_speedups.py`` holds them to it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_DelItem, PyDict_Size
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches, PyErr_Occurred
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.math cimport isfinite
from libc.string cimport memchr
from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index)
    bint PyUnicode_IS_ASCII(object o)
    # The raw call, so that a failed hash can be told apart from a missing key.
    PyObject* _PyDict_GetItemWithError "PyDict_GetItemWithError"(object d, object key)

from asyncio import InvalidStateError

import msgspec

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
# decode's default must be a C constant; the pure twin's value, tested equal.
cdef enum:
    _DEFAULT_MAX_DEPTH = 128
DEFAULT_MAX_DEPTH = _DEFAULT_MAX_DEPTH


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


cpdef check_size(object frame, Py_ssize_t max_size):
    """Refuse a frame over ``max_size`` bytes before anything parses it."""
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
    p = PyDict_GetItem(obj, _S_ID)
    has_id = p != NULL
    if has_id:
        call_id = <object>p
        reason = _bad_id(call_id)
        if reason:
            return _Invalid(None, _INVALID_REQUEST, reason)
    else:
        call_id = None
    p = PyDict_GetItem(obj, _S_JSONRPC)
    if p == NULL or not (type(<object>p) is str and <str>p == _S_VERSION):
        return _Invalid(call_id, _INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    p = PyDict_GetItem(obj, _S_METHOD)
    if p != NULL:
        method = <object>p
        if type(method) is not str:
            return _Invalid(call_id, _INVALID_REQUEST, "Invalid Request: method must be a string")
        p = PyDict_GetItem(obj, _S_PARAMS)
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
    p = PyDict_GetItem(obj, _S_ERROR)
    if p == NULL:
        p = PyDict_GetItem(obj, _S_RESULT)
        return _Response(call_id, None if p == NULL else <object>p, None)
    error = <object>p
    if PyDict_GetItem(obj, _S_RESULT) != NULL:
        return _Response(
            call_id, None, _ErrorObject(_INTERNAL_ERROR, "Invalid response: both result and error", None)
        )
    if type(error) is dict:
        p = PyDict_GetItem(error, _S_CODE)
        code = None if p == NULL else <object>p
        p = PyDict_GetItem(error, _S_MESSAGE)
        message = None if p == NULL else <object>p
        if type(code) is int and type(message) is str:
            p = PyDict_GetItem(error, _S_DATA)
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
_UNIT_CLASS[:] = [_PLAIN] * 256
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
    cdef Py_ssize_t i, depth = 0, ahead = 0
    cdef uint8_t k
    for i in range(n):
        ahead += (s[i] == 0x5B) | (s[i] == 0x7B)
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


cpdef object decode(object frame, Py_ssize_t max_size, Py_ssize_t max_depth=_DEFAULT_MAX_DEPTH):
    """Size check, depth check, one JSON decode, classification (see the pure twin for why)."""
    check_size(frame, max_size)
    try:
        if len(frame) > max_depth and _too_deep(frame, max_depth):
            return _Invalid(None, _PARSE_ERROR, f"Parse error: nested deeper than {max(max_depth, 0)} levels")
        obj = _json_decode(frame)
    except Exception:
        return _Invalid(None, _PARSE_ERROR, "Parse error")
    return classify(obj)


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
    cdef public Py_ssize_t max_pending

    def __init__(self, Py_ssize_t max_pending):
        self._futures = {}
        self._deadlines = {}
        self._next_id = 0
        self.max_pending = max_pending

    cpdef long long next_id(self):
        self._next_id += 1
        return self._next_id

    cdef object _full(self):
        return RpcBackpressureError(
            f"{PyDict_Size(self._futures)} calls are pending, the limit is {self.max_pending}; "
            "wait for some to finish or raise max_pending_requests"
        )

    cpdef long long register(self, object future, double deadline=INF) except? -1:
        if PyDict_Size(self._futures) >= self.max_pending:
            raise self._full()
        self._next_id += 1
        cdef object call_id = self._next_id
        PyDict_SetItem(self._futures, call_id, future)
        if deadline != INF:
            PyDict_SetItem(self._deadlines, call_id, deadline)
        return self._next_id

    cpdef add(self, object call_id, object future, double deadline=INF):
        if PyDict_Size(self._futures) >= self.max_pending:
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
