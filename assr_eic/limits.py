"""Every size and byte limit of the project, defined once; the modules that enforce them import them.

Two limits on an image side differ today and keep their meanings apart (issue 21 will settle the values):
:data:`MAX_SIDE` is what the format holds and what compress/decompress accept, :data:`NODE_MAX_SIDE` is
the largest output side the ComfyUI nodes offer.
"""

MAX_SIDE = 32768  # pixels per image side the format holds (the header's H and W; load_image, to_tensor)
MAX_PIXELS = 1 << 28  # pixels per image the format holds (268 Mpx: 16384 x 16384)
MAX_OUTPUT_PIXELS = MAX_PIXELS  # the most max_pixels can be raised to
DEFAULT_MAX_DECODE_PIXELS = 1 << 26  # decoding to more pixels is refused from the header unless raised
MAX_FILE_BYTES = 1 << 30  # larger files are refused before reading (no real .assr file comes near this)
MAX_PROMPT_BYTES = 4096  # UTF-8 bytes of the prompt a file carries
NODE_MAX_SIDE = 16384  # the nodes' largest output side (ASSR Decode's width and height; nodes/diffusion.py
# still has its own MAX_SIDE = 16384, left to issue 17's branch)
