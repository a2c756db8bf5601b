"""How much pixel data a PNG really holds, counted against what its header declares.

Pillow's PNG decoder stops without an error where the zlib stream ends, and leaves the rows
after that black; `app.codecs.images` asks this module whether every row arrived.
"""

from __future__ import annotations

import struct
import zlib


def stream_fills(data: bytes, width: int, height: int) -> bool:
    """Whether the PNG's zlib stream inflates to all the scanlines `width`x`height` needs,
    counting the bytes without keeping them."""
    header, idat = _chunks(data)
    if header is None or header[1] not in _CHANNELS:
        return True  # Pillow read it somehow; nothing to compare against
    bit_depth, colour_type, interlaced = header
    needed = _filtered_bytes(width, height, bit_depth * _CHANNELS[colour_type], interlaced)
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for chunk in idat:
            pending: bytes | memoryview = chunk
            while True:
                out = inflater.decompress(pending, _INFLATE_STEP)
                produced += len(out)
                pending = inflater.unconsumed_tail
                if produced >= needed:
                    return True
                if inflater.eof or (not pending and len(out) < _INFLATE_STEP):
                    break  # the stream ended, or this chunk is used up
    except zlib.error:
        pass  # Pillow decoded all it needed before this point, or it would have failed
    return False


def _chunks(data: bytes) -> tuple[tuple[int, int, bool] | None, list[memoryview]]:
    """Bit depth, colour type and interlacing from IHDR, and the first run of IDAT chunks'
    data (the image Pillow decodes first, an APNG's included), each cut to what arrived."""
    view = memoryview(data)
    header: tuple[int, int, bool] | None = None
    idat: list[memoryview] = []
    position = 8  # past the signature
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        body = view[position + 8 : position + 8 + length]
        if kind == b"IHDR" and len(body) >= 13 and header is None:
            header = (body[8], body[9], bool(body[12]))
        elif kind == b"IDAT":
            idat.append(body)
        elif idat:
            break
        position += 12 + length  # length, type, data, CRC
    return header, idat


def _filtered_bytes(width: int, height: int, bits: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (a filter byte, then the packed pixels) an image needs."""
    if not interlaced:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in ADAM7:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            total += pass_height * (1 + (pass_width * bits + 7) // 8)
    return total


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # grey, RGB, palette, grey+alpha, RGBA
ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP = 1 << 20  # bytes of output held at once while counting
