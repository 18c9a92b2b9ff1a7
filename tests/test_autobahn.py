"""Autobahn|Testsuite, strict, both directions, both twins (kosoku runs the case files, no Docker).

* kosoku's fuzzing client against the native server (``_ServerWebSocket``, its
  opening handshake and frame codec, an echo in place of the RPC channel: see
  ``tests/autobahn_echo.py``);
* kosoku's fuzzing server against the native client (``connect_native``).

Every case must be ``OK`` for the message exchange and for the closing
handshake; ``INFORMATIONAL`` is accepted only where the case itself says the
behaviour is the implementer's choice. ``NON-STRICT`` fails the test: that
covers the fail-fast UTF-8 cases (6.4.x: a text frame is refused while its
payload is still arriving), the cases where a valid message precedes a
protocol error (3.x, 4.x, 5.15: its echo goes out before the close), and a
close frame between two fragments (7.1.5: a clean 1000).

Both peers agree permessage-deflate when offered (the echo server with
:data:`SERVER_COMPRESSION`, the echo client offers :data:`CLIENT_COMPRESSION`;
kosoku offers or accepts it in 12.* and 13.* only). What runs here is every
case of 1.* to 10.* and :data:`COMPRESSION_CASES`, a subset of 12.* and 13.*:
each of the 12 groups (5 data sets of 12.*, 7 offer/accept pairs of 13.*) with
16-byte messages, and two with 8 KiB messages in 256-byte fragments (compressed
fragments inflated as they come: JSON text with the default windows, and
9-bit windows). All 216 compression cases pass in both directions
(``benchmarks/autobahn.py`` runs them, by default) but take minutes: each
echoes 1,000 messages of up to 128 KiB through kosoku's pure-Python deflate;
the subset adds about 8 s of cases per run, played 8 at a time.
The 9.* performance cases (messages up to 16 MiB) are included: played 8 at
a time they take a few seconds for the whole run; ``benchmarks/autobahn.py``
runs the same suite by hand, one case at a time if asked, with the HTML
reports.

Two settings of the echo peers are for kosoku rather than for the protocol:

* ``threshold=0`` (every message deflated): kosoku's case code fails with
  "Strings must be encoded before hashing" on an uncompressed echo in a
  compressed case, though RFC 7692 allows one (RSV1 unset); the threshold is
  tested against the ``websockets`` client in ``tests/test_compression.py``;
* ``client_no_context_takeover`` offered by the echo client: 13.2, 13.5 and
  13.6 accept only an offer that has it (UNIMPLEMENTED otherwise). Our
  deflater's context takeover is played by the server direction.

The reports (kosoku's, in Autobahn's format: ``index.html``, ``index.json``,
one page per case) are written under the test's temporary folder, or under
``$FASTWSRPC_AUTOBAHN_REPORTS`` when set (the folder CI keeps as an artifact).
kosoku needs Python 3.10+: on older Pythons the test is skipped with a message.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from fastwsrpc.config import CompressionConfig
from fastwsrpc.frames import FrameError

from .autobahn_echo import echo_server, run_echo_client

#: Cases whose verdict is INFORMATIONAL by design (the spec leaves the behaviour open).
INFORMATIONAL = {"7.1.6", "7.13.1", "7.13.2"}
#: permessage-deflate's cases: 12.1 to 12.5 (data sets) and 13.1 to 13.7 (parameters), 18 sizes each.
COMPRESSION_GROUPS = [f"12.{i}" for i in range(1, 6)] + [f"13.{i}" for i in range(1, 8)]
#: The ones played in the suite: each group at 16 bytes (.1); 8 KiB in 256-byte fragments (.11) for two.
COMPRESSION_CASES = [f"{group}.1" for group in COMPRESSION_GROUPS] + ["12.1.11", "13.3.11"]
#: The cases the suite leaves out (``benchmarks/autobahn.py`` plays them all).
EXCLUDED = [
    case
    for case in (f"{group}.{size}" for group in COMPRESSION_GROUPS for size in range(1, 19))
    if case not in COMPRESSION_CASES
]
#: What the echo server agrees, and what the echo client offers (see the module docstring).
SERVER_COMPRESSION = CompressionConfig(threshold=0)
CLIENT_COMPRESSION = CompressionConfig(threshold=0, client_no_context_takeover=True)
#: At least this many cases must have run (301 without 12.* and 13.*, and the 14 of COMPRESSION_CASES).
MIN_CASES = 310
#: Cases played at once (the fuzzing client's connections, the echo client's workers).
CONCURRENCY = 8
#: The bound of a whole run, far above what it takes (seconds).
RUN_TIMEOUT = 300


def _report_dir(tmp_path: Path, name: str) -> Path:
    root = os.environ.get("FASTWSRPC_AUTOBAHN_REPORTS")
    return (Path(root) if root else tmp_path) / name


def _write_reports(results: List[Any], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        from kosoku._report import write_reports  # kosoku's own Autobahn-format reports (its CLI's)
    except ImportError:  # pragma: no cover - a kosoku that moved it: the summary below still is written
        pass
    else:
        write_reports(results, str(where))
    summary = {
        r.case_id: {"behavior": r.behavior.value, "behaviorClose": r.behavior_close.value, "duration": r.duration}
        for r in results
    }
    (where / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


def _verdicts(results: List[Any]) -> Tuple[Dict[Tuple[str, str], int], List[str]]:
    """Counts per (behavior, behaviorClose), and a line for every case that is not strictly OK."""
    counts: Dict[Tuple[str, str], int] = collections.Counter()
    bad: List[str] = []
    for r in results:
        verdict = (r.behavior.value, r.behavior_close.value)
        counts[verdict] += 1
        allowed = {"OK", "INFORMATIONAL"} if r.case_id in INFORMATIONAL else {"OK"}
        if verdict[0] not in allowed or verdict[1] not in allowed:
            bad.append(f"{r.case_id}: {verdict[0]} / {verdict[1]}: {r.result} / {r.result_close}")
    return dict(counts), bad


def _check(results: List[Any], where: Path) -> None:
    _write_reports(results, where)
    counts, bad = _verdicts(results)
    assert len(results) >= MIN_CASES, f"only {len(results)} cases ran (reports in {where})"
    assert not bad, f"{len(bad)} cases not strictly OK ({counts}; reports in {where}):\n" + "\n".join(bad)


#: kosoku's 12.*/13.* case code reads its test data without closing the file: its ResourceWarning only.
KOSOKU_UNCLOSED = r"ignore:unclosed file <_io\.BufferedReader name='[^']*kosoku:ResourceWarning"


@pytest.fixture
def kosoku() -> Any:
    if sys.version_info < (3, 10):
        pytest.skip("the Autobahn test needs kosoku, which needs Python 3.10 or newer")
    import kosoku

    return kosoku


@pytest.mark.filterwarnings(KOSOKU_UNCLOSED)
async def test_autobahn_fuzzing_client_against_the_native_server(kosoku: Any, speedups: Any, tmp_path: Path) -> None:
    async with echo_server(speedups, SERVER_COMPRESSION) as port:
        results: List[Any] = []
        # Two passes: the 9.* cases (messages up to 16 MiB) keep the echo's loop busy for a
        # while; played beside the protocol-fault cases, a loaded machine can hold a fault's
        # TCP close past the fuzzer's one-second wait ("FAILED BY CLIENT"), which says
        # nothing about the code.
        for selection in ({"exclude_cases": [*EXCLUDED, "9.*"]}, {"cases": ["9.*"]}):
            try:
                results += await asyncio.wait_for(
                    kosoku.run_fuzzingclient(f"ws://127.0.0.1:{port}", concurrency=CONCURRENCY, **selection),
                    RUN_TIMEOUT,
                )
            except kosoku.FailureError as failure:
                results += failure.results
    _check(results, _report_dir(tmp_path, f"server-{speedups.__name__.rsplit('.', 1)[-1]}"))


@pytest.mark.filterwarnings(KOSOKU_UNCLOSED)
async def test_autobahn_fuzzing_server_against_the_native_client(kosoku: Any, speedups: Any, tmp_path: Path) -> None:
    async with kosoku.run_fuzzingserver(exclude_cases=EXCLUDED, host="127.0.0.1", port=0) as fuzzer:
        await asyncio.wait_for(
            run_echo_client(
                fuzzer.address, fuzzer.port, speedups, concurrency=CONCURRENCY, compression=CLIENT_COMPRESSION
            ),
            RUN_TIMEOUT,
        )
        try:
            results = await asyncio.wait_for(fuzzer.get_result(), RUN_TIMEOUT)
        except kosoku.FailureError as failure:
            results = failure.results
    _check(results, _report_dir(tmp_path, f"client-{speedups.__name__.rsplit('.', 1)[-1]}"))
    played = {r.case_id for r in results}
    assert played >= set(COMPRESSION_CASES), sorted(set(COMPRESSION_CASES) - played)


# ---------------------------------------------------------------- the codec rules Autobahn found, one by one


def _frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"") -> bytes:
    head = bytes((0x80 * fin | opcode, (0x80 if mask else 0) | len(payload)))
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("first", range(6))
@pytest.mark.parametrize("extra", [2, 3])
def test_text_is_refused_while_its_frame_is_still_arriving(speedups: Any, first: int, extra: int) -> None:
    """Fail fast (Autobahn 6.4.3): the bad bytes are seen before the frame is whole, at any mask offset."""
    payload = b"\xce\xba\xe1\xbd\xb9" + b"\xf4\x90\x80\x80" + b"tail"  # then U+110000 encoded: never UTF-8
    frame = _frame(1, payload, mask=b"\x01\x02\x03\x04")
    head = 6  # 2 header bytes and the mask
    parser = speedups.FrameParser(1 << 20, True)
    assert parser.feed(frame[: head + first]) == []  # valid so far (a character may be cut)
    assert parser.error is None and parser.receiving()
    assert parser.feed(frame[head + first : head + 5 + extra]) == []  # \xf4\x90: out of range already
    assert parser.error == FrameError(1007, "invalid UTF-8 in a text message")


def test_a_frame_checked_in_parts_is_delivered_whole(speedups: Any) -> None:
    text = ("h\u00e9llo \u4e2d\U0001f600" * 8).encode()  # 112 bytes; the first fragment ends inside a character
    frame = _frame(1, text[:100], fin=False, mask=b"wxyz") + _frame(0, text[100:], mask=b"abcd")
    parser = speedups.FrameParser(1 << 20, True)
    out: List[Any] = []
    for i in range(len(frame)):  # one byte at a time: every frame is checked in parts
        out += parser.feed(frame[i : i + 1])
    assert out == [(1, text)] and parser.error is None


def test_a_character_split_by_a_chunk_is_no_error(speedups: Any) -> None:
    parser = speedups.FrameParser(100, False)
    frame = _frame(1, "\U0001f600".encode())
    assert parser.feed(frame[:3]) == [] and parser.error is None  # half a character: wait for the rest
    assert parser.feed(frame[3:]) == [(1, "\U0001f600".encode())]


def test_a_close_between_fragments_ends_the_stream_cleanly(speedups: Any) -> None:
    """Autobahn 7.1.5: control frames may come between fragments; a close is one (the message is dropped)."""
    parser = speedups.FrameParser(100, False)
    close = struct.pack("!H", 1000)
    data = _frame(1, b"fragment1", fin=False) + _frame(8, close) + _frame(0, b"fragment2")
    assert parser.feed(data) == [(8, close)]
    assert parser.closed and parser.error is None and not parser.receiving()
