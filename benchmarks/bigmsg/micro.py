"""The codec alone on big frames, for callgrind: N times, a 1 MiB text frame fed in 64 KiB pieces, then decoded.

    valgrind --tool=callgrind python benchmarks/bigmsg/micro.py N [--unmasked] [--build] [--small]

``--build``: build_frame of the payload too; ``--small``: 1,000 small masked frames
(a notification each) in one feed, then decoded one by one, instead.
Uses the implementation FASTWSRPC_NO_EXTENSIONS selects.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastwsrpc import _accel

impl = _accel.impl
n = int(sys.argv[1])
masked = "--unmasked" not in sys.argv
text = b'{"jsonrpc":"2.0","method":"echo","params":{"text":"' + b"x" * (1 << 20) + b'"},"id":7}'
if "--small" in sys.argv:
    note = b'{"jsonrpc":"2.0","method":"note","params":{"i":1}}'
    data = b"".join(impl.build_frame(1, note, masked) for _ in range(1000))
    for _ in range(n):
        parser = impl.FrameParser(16 << 20, masked)
        for _, payload in parser.feed(data):
            impl.decode(payload, 16 << 20)
else:
    frame = impl.build_frame(1, text, masked)
    chunks = [frame[i : i + 65536] for i in range(0, len(frame), 65536)]
    parser = impl.FrameParser(16 << 20, masked)
    for _ in range(n):
        for chunk in chunks:
            for _, payload in parser.feed(chunk):
                impl.decode(payload, 16 << 20)
        if "--build" in sys.argv:
            impl.build_frame(1, text, not masked)
