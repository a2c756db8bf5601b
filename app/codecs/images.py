"""Image decoding and preprocessing: bytes in, one row of a model's input tensor out.

`training/` uses the same functions on its data, so a model sees the same pixels in
training and in serving. Everything here blocks: call it from a worker thread.

Nothing here changes Pillow's process-wide settings (`Image.MAX_IMAGE_PIXELS`,
`ImageFile.LOAD_TRUNCATED_IMAGES`): training/ and anything else in the process keep Pillow's
defaults. Our own `max_pixels` is the only size limit, and an image whose pixel data stops
short is refused even where the decoders would fill in the rest.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from app.codecs.png import stream_fills
from app.errors import ImageTooLarge, InvalidInput, UnsupportedMediaType
from app.model_card import ImagePreprocessing, TensorSpec

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF"})


def decode_image(data: bytes, prep: ImagePreprocessing, max_pixels: int) -> np.ndarray:
    """Decode an encoded image and fit it to the model: uint8, `[height, width, 3]`, RGB."""
    if not data:
        raise InvalidInput("the image is empty")
    pixels = _decode_plain_jpeg(data, prep, max_pixels)
    if pixels is not None:
        return pixels if _fits(pixels, prep) else fit_to_model(Image.fromarray(pixels), prep)
    _check_riff_length(data)
    try:
        image = _open(data)
    except UnidentifiedImageError:
        raise InvalidInput("the body is not a recognizable image") from None
    except Image.DecompressionBombError as exc:  # Pillow's GIF and WEBP readers check too
        raise ImageTooLarge(f"the image is too large to decode: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        if _means_truncated(exc):
            raise _incomplete(f"its header is cut short ({exc})") from None
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
                if image.format == "PNG":
                    _check_png_rows(image, data)
                rgb = ImageOps.exif_transpose(image).convert("RGB")
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"the image is too large to decode: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            if _means_truncated(exc):
                raise _incomplete(str(exc)) from None
            raise InvalidInput(f"the image could not be decoded: {exc}") from None
    return fit_to_model(rgb, prep)


def _decode_plain_jpeg(data: bytes, prep: ImagePreprocessing, max_pixels: int) -> np.ndarray | None:
    """RGB pixels of a JPEG that Pillow would decode at full scale with no EXIF rotation,
    through libjpeg-turbo in one call: the same pixels as Pillow's path (both use
    libjpeg-turbo's exact DCT and upsampling), a tenth of the time for a thumbnail, where
    Pillow's header parsing in Python dominates. None: take Pillow's path (other formats,
    EXIF or XMP, draft scaling, CMYK, anything odd, and every error but one with its
    message). The one: data that ends early, which Pillow would decode with the missing
    part filled in when an end marker follows the cut."""
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
    except ValueError as exc:
        if _means_truncated(exc):
            raise _incomplete(f"the JPEG data ends early ({exc})") from None
        return None


# APP1 segments carry EXIF and XMP, where Pillow finds an orientation to apply. They sit
# among the first segments; the marker cannot occur in entropy-coded data.
_APP1 = b"\xff\xe1"
_APP1_SEARCH_BYTES = 64 * 1024


def _open(data: bytes) -> ImageFile.ImageFile:
    """`Image.open` less its decompression-bomb check, which reads the process-wide
    `Image.MAX_IMAGE_PIXELS`: left at Pillow's default it would warn from about 89 M pixels
    and refuse from about 179 M, under a `max_pixels` raised above those; changed, it would
    change for everyone in the process. `decode_image` checks our own limit right after
    this, from the header, before any pixel is decoded. `warnings.catch_warnings` is no
    way around it here: it swaps the process-wide filters, and decoders run in threads."""
    stream = io.BytesIO(data)
    prefix = data[:16]
    tried: set[str] = set()
    # Image.open's order: the common plugins first, then every plugin Pillow has.
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for format_id in [f for f in Image.ID if f not in tried]:
            tried.add(format_id)
            factory, accept = Image.OPEN[format_id]
            try:
                accepted = accept(prefix) if accept is not None else True
                if isinstance(accepted, str) or not accepted:
                    continue
                stream.seek(0)
                return factory(stream, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all: Image.open tries the next one too
    raise UnidentifiedImageError("cannot identify the image")


def _means_truncated(exc: Exception) -> bool:
    """Whether a decoder's error says the data ran out, rather than that it is wrong."""
    message = str(exc).lower()
    return any(sign in message for sign in _TRUNCATION_SIGNS)


# Pillow: "image file is truncated", "Truncated File Read" (headers), "not enough image data"
# (BMP RLE), "cannot load this image" (no pixel data at all); libjpeg-turbo through
# simplejpeg: "Premature end of JPEG file", "premature end of data segment".
_TRUNCATION_SIGNS = (
    "truncated",
    "not enough image data",
    "cannot load this image",
    "premature end",
)


def _incomplete(detail: str) -> InvalidInput:
    return InvalidInput(f"the image data is incomplete (truncated): {detail}")


def _check_riff_length(data: bytes) -> None:
    """A WEBP cut short gets a clear message: libwebp's is "could not create decoder object"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise _incomplete(
                f"the WEBP file declares {declared} bytes, but only {len(data)} arrived"
            )


def _check_png_rows(image: ImageFile.ImageFile, data: bytes) -> None:
    """Refuse a PNG whose zlib stream is complete but holds fewer rows than its header
    declares: Pillow's decoder stops without an error where the stream ends (the check in
    its ZipDecode.c is commented out) and leaves the rest black. The stream is inflated
    again and its bytes counted, without keeping them: exact for every PNG (interlaced and
    animated too), for about +40% of a large photo's decode time, nothing for a thumbnail."""
    extents = image.tile[0].extents if image.tile else None
    x0, y0, x1, y1 = extents or (0, 0, *image.size)  # an APNG's first frame may be smaller
    if not stream_fills(data, x1 - x0, y1 - y0):
        raise _incomplete(
            f"its pixel data stops short of the {image.width}x{image.height} pixels "
            "its header declares"
        )


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
