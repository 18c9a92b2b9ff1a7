"""Both twins' FrameParser on large frames (past the compiled twin's eager buffer), cut anywhere: same outcome.

    python benchmarks/bigmsg/check_twins.py [--rounds 200] [--seed 1]

The codec's test suite cuts small frames at random; this cuts frames of up to
5 MiB (text with multibyte characters, binary, fragmented, masked or not, some
with one invalid byte or a control frame in between) into random chunks, and
checks that the compiled and the pure twin give the very same events and error,
and that a valid message comes out as sent.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from typing import Any, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastwsrpc import _speedups as compiled
from fastwsrpc import _speedups_py as py


def frame(opcode: int, payload: bytes, fin: bool, mask: Optional[bytes]) -> bytes:
    head1 = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n >= 65536:
        header = struct.pack("!BBQ", head1, bit | 127, n)
    elif n >= 126:
        header = struct.pack("!BBH", head1, bit | 126, n)
    else:
        header = struct.pack("!BB", head1, bit | n)
    if mask is None:
        return header + payload
    return header + mask + compiled.apply_mask(payload, mask)


def outcome(impl: Any, chunks: List[bytes], max_size: int, server: bool) -> Tuple[Any, Any, bool]:
    parser = impl.FrameParser(max_size, server)
    events: List[Any] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser.error, parser.receiving()


def one(rng: random.Random) -> None:
    server = rng.random() < 0.5
    size = rng.choice([1, 100, 5000, 70_000, 1 << 20, (1 << 20) + 77, 2 << 20, (2 << 20) + 1, 5 << 20])
    text = rng.random() < 0.7
    if text:
        unit = "ab\u00e9\u4e2dcd\U0001f600" if rng.random() < 0.5 else "x"
        body = (unit * (size // len(unit.encode()) + 1)).encode()[:size]
        body = body.decode("utf-8", "ignore").encode()
    else:
        body = rng.randbytes(size)
    if text and rng.random() < 0.2 and body:
        at = rng.randrange(len(body))
        body = body[:at] + b"\xff" + body[at + 1 :]
    pieces = [body]
    if rng.random() < 0.3 and len(body) > 10:
        cuts = sorted(rng.randrange(len(body)) for _ in range(rng.randint(1, 3)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    data = b""
    for i, piece in enumerate(pieces):
        mask = rng.randbytes(4) if server else None
        data += frame((1 if text else 2) if i == 0 else 0, piece, i == len(pieces) - 1, mask)
        if rng.random() < 0.2:
            data += frame(9, b"ping", True, rng.randbytes(4) if server else None)
    data += frame(1, b"next", True, rng.randbytes(4) if server else None)
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data))]
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 40)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    max_size = rng.choice([16 << 20, 16 << 20, len(body), len(body) - 1, 3 << 20])
    a = outcome(compiled, chunks, max_size, server)
    b = outcome(py, chunks, max_size, server)
    assert a == b, (size, text, server, max_size, a[1], b[1], len(a[0]), len(b[0]))
    if a[1] is None and not a[2] and max_size >= len(body):
        assert next(e for e in a[0] if e[0] in (1, 2))[1] == body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        one(rng)
    print(f"{args.rounds} rounds: the twins agree")


if __name__ == "__main__":
    main()
