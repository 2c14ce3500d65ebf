"""Which frame sizes the AV1 decoder (dav1d through FFmpeg/PyAV) decodes: the experiment behind
``assr_eic.limits.av1_frame_fits``.

    python bench/av1_frame_limit.py 3840x65536 3842x65536 16128x16128 16130x16130

Each WIDTHxHEIGHT is a flat grey frame coded by libaom (speed 9), then decoded by libdav1d with no check
of ours in front (about 6.6 GB and 10-25 s per frame near 2**28 pixels). Results:
``bench/results/decode_memory/av1_frame_limit.txt``.
"""

from __future__ import annotations

import sys
import time

import av
import numpy as np

from assr_eic.codec import av1, obu


def raw_decode(data: bytes, ph: int, pw: int) -> list[tuple[int, int]]:
    ctx = av.CodecContext.create("libdav1d", "r")
    ctx.options = {"max_pixels": str(ph * pw)}
    ctx.thread_count = 1
    frames = [*ctx.decode(av.Packet(b"\x12\x00" + obu.expand(data, ph, pw))), *ctx.decode(None)]
    return [(f.width, f.height) for f in frames]


def main(sizes: list[str]) -> None:
    av.logging.set_level(av.logging.ERROR)
    for s in sizes:
        w, h = map(int, s.split("x"))
        rgb = np.full((h, w, 3), 128, np.uint8)
        t = time.time()
        data = obu.compact(av1._avif_payload(rgb, 63, 9), h, w)
        del rgb
        try:
            print(s, "decodes:", raw_decode(data, h, w), f"(enc {time.time() - t:.0f}s)", flush=True)
        except Exception as e:  # noqa: BLE001  (the experiment reports whatever FFmpeg says)
            print(s, "refused:", e, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
