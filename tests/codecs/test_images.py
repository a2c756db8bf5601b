"""Decoding: the one-call JPEG path gives exactly the pixels of Pillow's path."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from app.codecs import images
from app.codecs.images import decode_image
from app.model_card import ImagePreprocessing
from tests.conftest import DATASETS

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
