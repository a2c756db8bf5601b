"""Image decoding and preprocessing: bytes in, one row of a model's input tensor out.

`training/` uses the same functions on its data, so a model sees the same pixels in
training and in serving. Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageTooLarge, InvalidInput, UnsupportedMediaType
from app.model_card import ImagePreprocessing, TensorSpec

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF"})

# We enforce our own, lower pixel limit before decoding; Pillow's check would only warn.
Image.MAX_IMAGE_PIXELS = None


def decode_image(data: bytes, prep: ImagePreprocessing, max_pixels: int) -> np.ndarray:
    """Decode an encoded image and fit it to the model: uint8, `[height, width, 3]`, RGB."""
    if not data:
        raise InvalidInput("the image is empty")
    pixels = _decode_plain_jpeg(data, prep, max_pixels)
    if pixels is not None:
        return pixels if _fits(pixels, prep) else fit_to_model(Image.fromarray(pixels), prep)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidInput("the body is not a recognizable image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the image header is corrupt: {exc}") from None
    with image:
        if image.format not in SUPPORTED_FORMATS:
            raise UnsupportedMediaType(
                f"image format {image.format} is not supported; "
                f"send one of {', '.join(sorted(SUPPORTED_FORMATS))}"
            )
        width, height = image.size
        # The header alone tells the size: refuse decompression bombs before decoding.
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image has {width}x{height} pixels, more than the limit of {max_pixels}"
            )
        if width < 1 or height < 1:
            raise InvalidInput("the image has no pixels")
        try:
            if image.format == "JPEG":
                # Let libjpeg decode at a reduced scale when the model wants fewer pixels.
                image.draft("RGB", _draft_size(image.size, prep))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. Pillow's note on palette transparency
                image.load()
                rgb = ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidInput(f"the image could not be decoded: {exc}") from None
    return fit_to_model(rgb, prep)


def _decode_plain_jpeg(data: bytes, prep: ImagePreprocessing, max_pixels: int) -> np.ndarray | None:
    """RGB pixels of a JPEG that Pillow would decode at full scale with no EXIF rotation,
    through libjpeg-turbo in one call: the same pixels as Pillow's path (both use
    libjpeg-turbo's exact DCT and upsampling), a tenth of the time for a thumbnail, where
    Pillow's header parsing in Python dominates. None: take Pillow's path (other formats,
    EXIF or XMP, draft scaling, CMYK, anything odd, and every error with its message)."""
    if not data.startswith(b"\xff\xd8") or _APP1 in data[:_APP1_SEARCH_BYTES]:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray") or not 0 < width * height <= max_pixels:
        return None
    draft_width, draft_height = _draft_size((width, height), prep)
    if min(width // draft_width, height // draft_height) >= 2:
        return None  # Pillow would decode at a reduced scale: keep its choice of scale
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")  # type: ignore[no-any-return]
    except ValueError:
        return None


# APP1 segments carry EXIF and XMP, where Pillow finds an orientation to apply. They sit
# among the first segments; the marker cannot occur in entropy-coded data.
_APP1 = b"\xff\xe1"
_APP1_SEARCH_BYTES = 64 * 1024


def _fits(pixels: np.ndarray, prep: ImagePreprocessing) -> bool:
    """Whether pixels are already what `fit_to_model` would make of them."""
    return prep.resize == "stretch" and pixels.shape[:2] == (prep.height, prep.width)


def fit_to_model(image: Image.Image, prep: ImagePreprocessing) -> np.ndarray:
    """Resize (and crop) an RGB image by the model's rule: uint8 `[height, width, 3]`."""
    if prep.resize == "stretch":
        if image.size != (prep.width, prep.height):
            image = image.resize((prep.width, prep.height), Image.Resampling.BILINEAR)
    else:
        assert prep.resize_shorter_to is not None  # the card validator guarantees it
        image = _resize_shorter_side(image, prep.resize_shorter_to)
        left = (image.width - prep.width) // 2
        top = (image.height - prep.height) // 2
        image = image.crop((left, top, left + prep.width, top + prep.height))
    return np.asarray(image, dtype=np.uint8)


def to_input_rows(pixels: np.ndarray, prep: ImagePreprocessing, spec: TensorSpec) -> np.ndarray:
    """Turn uint8 `[n, height, width, 3]` pixels into the model's input tensor."""
    if spec.dtype == "uint8":
        rows = pixels
    else:
        rows = pixels.astype(np.float32) * np.float32(1 / 255)
        if not prep.normalization.in_graph:
            mean = np.asarray(prep.normalization.mean, dtype=np.float32)
            std = np.asarray(prep.normalization.std, dtype=np.float32)
            rows = (rows - mean) / std
        rows = rows.astype(spec.dtype, copy=False)
    if prep.layout == "NCHW":
        rows = rows.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(rows)


def _resize_shorter_side(image: Image.Image, shorter: int) -> Image.Image:
    width, height = image.size
    scale = shorter / min(width, height)
    size = (max(shorter, round(width * scale)), max(shorter, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR) if size != image.size else image


def _draft_size(size: tuple[int, int], prep: ImagePreprocessing) -> tuple[int, int]:
    if prep.resize == "stretch":
        return (prep.width, prep.height)
    assert prep.resize_shorter_to is not None
    scale = prep.resize_shorter_to / min(size)
    return (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
