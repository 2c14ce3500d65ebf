"""Every size and byte limit of the project, defined once, each with its reason; the modules that
enforce them import them.

One limit, one meaning (issue 21):

- :data:`MAX_SIDE` / :data:`MAX_PIXELS`: the images the format holds (the header's H and W). The same
  limit is the encoder's (``to_tensor``, ``load_image``: Pillow's own decompression-bomb limit is
  raised to it while ``load_image`` opens a file, which has been checked against it from its header) and
  the largest output a decode can be asked for (:data:`MAX_OUTPUT_PIXELS`).
- :func:`av1_frame_fits`: the largest frame the AV1 decoder (dav1d through FFmpeg/PyAV) decodes. The
  ``av1`` codec refuses at encode time a low-res image whose padded frame does not fit (so the encoder
  never writes a file the decoder refuses), rate control's finest scale respects it, and a file that
  declares such a frame is refused from its header.
- :data:`LEARNED_MAX_LOWRES_PIXELS`: the learned codec's low-res images (its analysis and synthesis
  transforms run on the whole low-res image, and its rANS decoder is pure Python).
- :data:`DEFAULT_MAX_DECODE_PIXELS`: the user's decoding limit, raisable up to :data:`MAX_OUTPUT_PIXELS`
  (``decompress(max_pixels=)``, ``assr-eic decompress --max-pixels``, ASSR Decode's ``max_pixels``).
- :data:`NODE_MAX_SIDE`: the nodes' width and height widgets (a UI bound, not a format limit).

Decoding memory (``decompress``, either codec, fidelity decoder or plain bicubic): with (H, W) the
output and (h, w) the low-res size the header implies, the peak resident memory is at most ::

    peak <= base + 3 * H * W + c1 * h * w + c2

- ``3 * H * W``: the uint8 output;
- ``c1 * h * w``: the decoded low-res image. ``av1``: :data:`AV1_LOWRES_BYTES` = 18 bytes per low-res
  pixel: the float32 RGB image the decoder reads (12), the YUV planes kept as the codec's symbols (1.5)
  and, while the frame is converted, dav1d's picture and PyAV's copy of its planes (3), the conversion
  running in bands of about a million pixels (``codec/av1.py``; it took about 59 bytes per pixel
  before). ``learned``: :data:`LEARNED_LOWRES_BYTES` per low-res pixel (its synthesis transform's
  activations, not tiled: at most 4 Mpx of low-res);
- ``c2`` = :data:`DECODE_TILE_BYTES`: one 512 x 512 output tile's work (the trunk on its low-res
  footprint, the per-pixel head) and the allocator's slack;
- ``base``: the process before the file (Python, torch, the model: about 0.6 GB on CPU).

The CLI adds the PNG it writes: Pillow's copy of the image (4 bytes per pixel) and the compressed file,
:data:`CLI_EXTRA_BYTES_PER_PIXEL` in all. The ComfyUI node adds its float IMAGE output (12 bytes per
pixel). Measured with ``bench/decode_memory.py`` (``bench/results/decode_memory/``), up to the largest
legal files.
"""

MAX_SIDE = 32768  # pixels per image side the format holds (the header's H and W; load_image, to_tensor)
MAX_PIXELS = 1 << 28  # pixels per image the format holds (268 Mpx: 16384 x 16384)
MAX_OUTPUT_PIXELS = MAX_PIXELS  # the most a decode can be asked for (max_pixels is at most this)
# 64 Mpx: a uint8 output of 192 MiB, about 1.8 GB of peak for an av1 file at s = 1 by the formula above
# (0.8 GB for the node's float IMAGE besides), and a few minutes of fidelity decoding on 2 CPU cores:
# safe on any machine that runs the model, and above every camera photo up to 8K video frames and 50 Mpx
# sensors. A file of a few bytes declaring 268 Mpx would otherwise take 4-5 GB and ten minutes of CPU.
DEFAULT_MAX_DECODE_PIXELS = 1 << 26
MAX_FILE_BYTES = 1 << 30  # larger files are refused before reading (no real .assr file comes near this)
MAX_PROMPT_BYTES = 4096  # UTF-8 bytes of the prompt a file carries
NODE_MAX_SIDE = 16384  # the nodes' largest output side (ASSR Decode's width and height; nodes/diffusion.py)
LEARNED_MAX_LOWRES_PIXELS = 1 << 22  # 2048 x 2048: bounds g_a / g_s memory and the rANS decoding time

# FFmpeg's libdav1d wrapper allocates each picture with both sides rounded up to 128 and checks it with
# av_image_check_size (libavutil/imgutils.c): with no pixel format known a line takes 8 bytes per pixel
# plus 128 pixels of padding, and the picture (its height + 128 lines) must stay below INT_MAX bytes.
# That is (H' + 128) * (W' + 128) < 2**28 with H', W' the sides rounded up to 128. Measured through PyAV
# (libdav1d), flat frames coded by libaom: 3840 x 65536 and 16128 x 16128 decode, 3842 x 65536 and
# 16130 x 16130 are refused ("Invalid data found when processing input"), as the formula says; AV1 itself
# allows 65536 a side. The largest square frame is 16128 x 16128.
_FFMPEG_INT_MAX = (1 << 31) - 1

AV1_LOWRES_BYTES = 18  # bytes per low-res pixel of the av1 decoding stage (see above)
LEARNED_LOWRES_BYTES = 440  # bytes per low-res pixel of the learned decoding stage (see above)
DECODE_TILE_BYTES = 160 << 20  # one output tile's work and the allocator's slack (see above)
# the CLI's PNG: Pillow's RGBX copy (4) and the compressed bytes (below 1); measured 2.9 on the largest learned
# file, where the PNG stage is the peak (CLI 2713 MB vs library 1926 MB for 268 Mpx)
CLI_EXTRA_BYTES_PER_PIXEL = 5


def av1_frame_fits(height: int, width: int) -> bool:
    """Whether the AV1 decoder (dav1d through FFmpeg) decodes a frame of ``height`` x ``width`` (padded)."""

    def line(n: int) -> int:  # a side rounded up to 128, plus FFmpeg's 128 of padding
        return -(-n // 128) * 128 + 128

    return 1 <= height <= 65536 and 1 <= width <= 65536 and line(height) * 8 * line(width) < _FFMPEG_INT_MAX


def decode_peak_bound(
    codec: str, size: tuple[int, int], lowres: tuple[int, int], *, cli: bool = False, base: float = 0.0
) -> float:
    """The formula above: the most bytes ``decompress`` (``cli``: ``assr-eic decompress``) may peak at,
    for an output of ``size`` = (H, W) from a low-res image of ``lowres`` = (h, w), over ``base``."""
    (H, W), (h, w) = size, lowres
    c1 = AV1_LOWRES_BYTES if codec == "av1" else LEARNED_LOWRES_BYTES
    return base + (3 + CLI_EXTRA_BYTES_PER_PIXEL * cli) * H * W + c1 * h * w + DECODE_TILE_BYTES
