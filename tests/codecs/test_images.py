"""Decoding: the one-call JPEG path gives exactly the pixels of Pillow's path; incomplete
images are refused; Pillow's process-wide settings are left alone."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from app.codecs import images, png
from app.codecs.images import decode_image, fit_to_model
from app.errors import ImageTooLarge, InvalidInput
from app.model_card import ImagePreprocessing
from tests.conftest import DATASETS, REPO_ROOT

CIFAR = DATASETS / "cifar10-jpeg.tar.gz"
MAX_PIXELS = 40_000_000


def _prep(size: int = 32, resize: str = "stretch") -> ImagePreprocessing:
    return ImagePreprocessing.model_validate(
        {
            "height": size,
            "width": size,
            "resize": resize,
            "resize_shorter_to": size if resize != "stretch" else None,
            "layout": "NHWC",
            "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3, "in_graph": True},
        }
    )


def _jpeg(size: tuple[int, int], mode: str = "RGB", seed: int = 0, **options: object) -> bytes:
    """Noise, so that the DCT, the upsampling and the colour conversion all matter."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _through_pillow(
    data: bytes, prep: ImagePreprocessing, monkeypatch: pytest.MonkeyPatch
) -> np.ndarray:
    with monkeypatch.context() as patch:
        patch.setattr(images, "_decode_plain_jpeg", lambda *args: None)
        return decode_image(data, prep, MAX_PIXELS)


CASES = {
    "4:2:0": (_jpeg((32, 32)), _prep()),
    "4:4:4": (_jpeg((32, 32), subsampling=0, quality=95), _prep()),
    "4:2:2": (_jpeg((32, 32), subsampling=1), _prep()),
    "grayscale": (_jpeg((32, 32), "L"), _prep()),
    "progressive": (_jpeg((32, 32), progressive=True), _prep()),
    "odd size, stretched": (_jpeg((45, 37)), _prep()),
    "center crop": (_jpeg((50, 40)), _prep(32, "shorter_side_then_center_crop")),
    "photo, draft scale": (_jpeg((400, 300)), _prep()),
}


@pytest.mark.parametrize("case", CASES)
def test_jpeg_pixels_match_pillows(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data, prep = CASES[case]
    ours = decode_image(data, prep, MAX_PIXELS)
    assert ours.dtype == np.uint8 and ours.shape == (prep.height, prep.width, 3)
    np.testing.assert_array_equal(ours, _through_pillow(data, prep, monkeypatch))


def test_which_jpegs_take_the_one_call_path() -> None:
    prep = _prep()
    assert images._decode_plain_jpeg(CASES["4:2:0"][0], prep, MAX_PIXELS) is not None
    assert images._decode_plain_jpeg(CASES["grayscale"][0], prep, MAX_PIXELS) is not None
    # Pillow would decode at a quarter of the scale: its choice stays.
    assert images._decode_plain_jpeg(CASES["photo, draft scale"][0], prep, MAX_PIXELS) is None
    assert images._decode_plain_jpeg(CASES["4:2:0"][0], prep, max_pixels=100) is None
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(cmyk, format="JPEG")
    assert images._decode_plain_jpeg(cmyk.getvalue(), prep, MAX_PIXELS) is None
    assert images._decode_plain_jpeg(_jpeg((32, 32))[:200], prep, MAX_PIXELS) is None


def test_exif_orientation_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 40x20 landscape image whose EXIF says "rotate 90 degrees clockwise to display".
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # white on the left half
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    data = buffer.getvalue()
    prep = _prep(40, "shorter_side_then_center_crop")
    assert images._decode_plain_jpeg(data, prep, MAX_PIXELS) is None
    upright = decode_image(data, prep, MAX_PIXELS)
    # Displayed upright it is a portrait: the white half is now on top.
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50


def test_xmp_orientation_is_applied() -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", xmp=xmp, quality=95)
    data = buffer.getvalue()
    prep = _prep(40, "shorter_side_then_center_crop")
    assert images._decode_plain_jpeg(data, prep, MAX_PIXELS) is None
    upright = decode_image(data, prep, MAX_PIXELS)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50


@pytest.mark.skipif(not CIFAR.exists(), reason=f"{CIFAR} is absent")
def test_real_cifar_jpegs_match_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    prep = _prep()
    checked = 0
    with tarfile.open(CIFAR) as archive:
        for member in archive:
            if not member.name.endswith(".jpg"):
                continue
            file = archive.extractfile(member)
            assert file is not None
            data = file.read()
            assert images._decode_plain_jpeg(data, prep, MAX_PIXELS) is not None
            np.testing.assert_array_equal(
                decode_image(data, prep, MAX_PIXELS), _through_pillow(data, prep, monkeypatch)
            )
            checked += 1
            if checked == 500:
                break
    assert checked == 500


# Incomplete pixel data: refused, whatever the decoders would fill in.

NOISE = np.random.default_rng(7).integers(0, 256, (20, 24, 3), dtype=np.uint8)
# The interlacing passes (x0, y0, dx, dy) are the decoder's: a wrong table would build PNGs
# that Pillow reads as other pixels, which the hand-built PNG test catches.
_ADAM7 = png.ADAM7


def _png(pixels: np.ndarray, interlaced: bool = False, rows_missing: int = 0) -> bytes:
    """An RGB PNG built by hand: Pillow writes neither interlaced PNGs nor a complete zlib
    stream that holds fewer scanlines than the header declares (`rows_missing` of the last
    pass, which spans the full width in both layouts). Every scanline has filter 0."""
    height, width, _ = pixels.shape
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    lines = [
        b"\x00" + row.tobytes()
        for x0, y0, dx, dy in passes
        if pixels[y0::dy, x0::dx].size
        for row in pixels[y0::dy, x0::dx]
    ]
    scanlines = b"".join(lines[: len(lines) - rows_missing])

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlaced))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND", b"")
    )


def _encoded(fmt: str, mode: str = "RGB", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(NOISE).convert(mode).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _refused_as_incomplete(data: bytes, prep: ImagePreprocessing) -> str:
    with pytest.raises(InvalidInput) as refused:
        decode_image(data, prep, MAX_PIXELS)
    assert refused.value.code == "invalid_input"
    assert "incomplete (truncated)" in refused.value.message, refused.value.message
    return refused.value.message


@pytest.mark.parametrize("interlaced", [False, True], ids=["sequential", "interlaced"])
def test_hand_built_pngs_decode_to_their_pixels(interlaced: bool) -> None:
    prep = _prep(24)  # 24x24: stretched, so compare with Pillow's own resize of the pixels
    expected = fit_to_model(Image.fromarray(NOISE), prep)
    np.testing.assert_array_equal(decode_image(_png(NOISE, interlaced), prep, MAX_PIXELS), expected)


@pytest.mark.parametrize("interlaced", [False, True], ids=["sequential", "interlaced"])
@pytest.mark.parametrize("rows_missing", [1, 7, 10])
def test_a_png_whose_zlib_stream_ends_before_its_last_row_is_refused(
    interlaced: bool, rows_missing: int
) -> None:
    # The stream is complete: Pillow's decoder stops at its end and leaves the rest black.
    message = _refused_as_incomplete(_png(NOISE, interlaced, rows_missing), _prep(24))
    assert "24x20" in message


# An EXIF block (orientation 1): it sends a JPEG down Pillow's path instead of the one call.
_EXIF = Image.Exif()
_EXIF[0x0112] = 1


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(NOISE).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


# JPEGs that take the one call (simplejpeg, strict), which names data that ends early.
JPEGS = {
    "baseline": (_jpeg((24, 20)), _prep(24)),
    "grayscale": (_jpeg((24, 20), "L"), _prep(24)),
    "progressive": (_jpeg((24, 20), progressive=True), _prep(24)),
}
# Pillow's path (EXIF, reduced scale, CMYK) fills in what is missing without a word; telling
# would take a second decode of the scan data, +50-90% for every such JPEG.
LEFT_OPEN = {
    "exif": (_jpeg((24, 20), exif=_EXIF.tobytes()), _prep(24)),
    "reduced scale": (_jpeg((400, 300)), _prep(32)),
    "cmyk": (_cmyk_jpeg(), _prep(24)),
}


@pytest.mark.parametrize("case", JPEGS)
def test_a_jpeg_cut_short_is_refused_even_when_closed_with_an_end_marker(case: str) -> None:
    """Cut in the entropy-coded data and given an end-of-image marker, a JPEG decodes in
    libjpeg with a warning and the rest filled in: Pillow ignores the warning."""
    data, prep = JPEGS[case]
    decode_image(data, prep, MAX_PIXELS)  # whole, it decodes
    scan = data.index(b"\xff\xda")  # the first scan's header; its data follows
    for cut in (scan + 20, (scan + len(data)) // 2, len(data) - 20):
        assert "ends early" in _refused_as_incomplete(data[:cut] + b"\xff\xd9", prep)
        _refused_as_incomplete(data[:cut], prep)


@pytest.mark.parametrize("case", LEFT_OPEN)
def test_a_jpeg_on_pillows_path_cut_and_closed_is_still_decoded(case: str) -> None:
    """Left open, for its cost: pins down what such a JPEG gets today."""
    data, prep = LEFT_OPEN[case]
    scan = data.index(b"\xff\xda")
    closed = data[: (scan + len(data)) // 2] + b"\xff\xd9"
    assert decode_image(closed, prep, MAX_PIXELS).shape == (prep.height, prep.width, 3)


def test_a_progressive_jpeg_closed_between_scans_is_decoded() -> None:
    """Left open on purpose: the JPEG standard lets a progressive file leave out refinement
    scans, so one closed after a whole scan cannot be told from a valid file."""
    data = _jpeg((24, 20), progressive=True)
    closed = data[: data.rindex(b"\xff\xda")] + b"\xff\xd9"
    assert decode_image(closed, _prep(24), MAX_PIXELS).shape == (24, 24, 3)


CUT_SHORT = {
    "PNG": _encoded("PNG"),
    "PNG palette": _encoded("PNG", "P"),
    "PNG 1-bit": _encoded("PNG", "1"),
    "JPEG": _jpeg((24, 20)),
    "JPEG progressive": _jpeg((24, 20), progressive=True),
    "GIF": _encoded("GIF"),
    "WEBP": _encoded("WEBP"),
    "WEBP lossless": _encoded("WEBP", lossless=True),
    "BMP": _encoded("BMP"),
    "BMP palette": _encoded("BMP", "P"),
}


@pytest.mark.parametrize("case", CUT_SHORT)
def test_every_cut_of_an_image_is_refused_or_decodes_to_the_same_pixels(case: str) -> None:
    """Cut after every byte: refused, or (the end of a PNG or GIF after the pixel data, say)
    the very pixels of the whole file. Once the header is whole (Pillow opens it), a
    refusal says the data is incomplete."""
    data, prep = CUT_SHORT[case], _prep(24)
    whole = decode_image(data, prep, MAX_PIXELS)
    for cut in range(1, len(data)):
        try:
            pixels = decode_image(data[:cut], prep, MAX_PIXELS)
        except InvalidInput as exc:
            if _header_is_whole(data[:cut]):
                assert "incomplete (truncated)" in exc.message, (cut, exc.message)
        else:
            np.testing.assert_array_equal(pixels, whole, err_msg=f"cut at {cut}")


def _header_is_whole(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError):
        return False
    return True


# Pillow's pixel limit: the process keeps Pillow's, and ours alone decides.


def test_importing_the_decoder_leaves_pillows_settings_alone() -> None:
    """A fresh interpreter, as training/ or any other user of Pillow in the process sees it."""
    script = (
        "from PIL import Image, ImageFile\n"
        "limit = Image.MAX_IMAGE_PIXELS\n"
        "import app.codecs.images\n"
        "assert Image.MAX_IMAGE_PIXELS == limit == int(1024 * 1024 * 1024 // 4 // 3), "
        "Image.MAX_IMAGE_PIXELS\n"
        "assert ImageFile.LOAD_TRUNCATED_IMAGES is False\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT)


def test_an_image_above_pillows_limit_decodes_within_a_raised_max_pixels() -> None:
    """10000x9000, above Pillow's 89 M: a flat grayscale JPEG of 1 MB, decoded at 1/8 scale
    (a tenth of a second, 100 MB to encode it). Pillow would warn (an error under pytest)."""
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 10_000 * 9_000
    buffer = io.BytesIO()
    Image.new("L", (10_000, 9_000), 77).save(buffer, format="JPEG")
    data = buffer.getvalue()
    pixels = decode_image(data, _prep(), max_pixels=100_000_000)
    assert pixels.shape == (32, 32, 3) and (pixels == 77).all()
    with pytest.raises(ImageTooLarge, match="10000x9000"):
        decode_image(data, _prep(), MAX_PIXELS)


@pytest.mark.parametrize("size", [(15, 10), (24, 20)], ids=["Pillow would warn", "would refuse"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_pillows_pixel_limit_plays_no_part(
    fmt: str, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Pillow's limit lowered to 100 pixels, small images stand in for huge ones: above
    it (a warning) and above twice it (DecompressionBombError), they decode as before.
    Except a WEBP above twice it: Pillow's WEBP reader checks that itself (413)."""
    options: dict[str, object] = {"exif": _EXIF.tobytes()} if fmt == "JPEG" else {}
    buffer = io.BytesIO()
    Image.fromarray(NOISE[: size[1], : size[0]]).save(buffer, format=fmt, **options)
    prep = _prep(16)
    expected = decode_image(buffer.getvalue(), prep, MAX_PIXELS)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    if fmt == "WEBP" and size[0] * size[1] > 200:
        with pytest.raises(ImageTooLarge, match="too large to decode"):
            decode_image(buffer.getvalue(), prep, MAX_PIXELS)
        return
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), prep, MAX_PIXELS), expected)


def test_a_gif_frame_that_pillow_refuses_is_image_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GIF frame reaching past the canvas grows the image inside Pillow's GIF reader, which
    checks Pillow's limit itself: refused as too large (413), not a server error."""
    buffer = io.BytesIO()
    Image.new("P", (40, 30), 3).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 10, 10)  # a 10x10 canvas under the 40x30 frame
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageTooLarge, match="too large to decode"):
        decode_image(bytes(data), _prep(), MAX_PIXELS)
