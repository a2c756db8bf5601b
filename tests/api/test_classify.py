"""POST /v1/models/{model}/classify and /v1/classify, through the real app."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encoded_image
from tests.model_factory import IMAGE_LABELS, IMAGE_SIZE

MODEL_SIZE = (IMAGE_SIZE, IMAGE_SIZE)

RED, GREEN, BLUE, BLACK = (230, 10, 10), (10, 230, 10), (10, 10, 230), (0, 0, 0)


def top_label(result: dict) -> str:
    return result["predictions"][0]["label"]


def test_multipart_images_are_classified_in_request_order(client) -> None:
    files = [
        ("file", (f"{i}.png", encoded_image(c), "image/png"))
        for i, c in enumerate([RED, BLUE, GREEN, BLACK])
    ]
    response = client.post("/v1/models/tiny-image/classify", files=files)
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "tiny-image" and body["version"] == 1
    assert [top_label(r) for r in body["results"]] == ["red", "blue", "green", "dark"]


def test_scores_are_probabilities_best_first(client) -> None:
    response = client.post(
        "/v1/classify?top_k=4", content=encoded_image(RED), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200
    predictions = response.json()["results"][0]["predictions"]
    scores = [p["score"] for p in predictions]
    assert sorted(p["label"] for p in predictions) == sorted(IMAGE_LABELS)
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_top_k_defaults_to_five_capped_by_labels(client) -> None:
    response = client.post(
        "/v1/classify", content=encoded_image(GREEN), headers={"content-type": "image/png"}
    )
    assert len(response.json()["results"][0]["predictions"]) == len(IMAGE_LABELS)
    response = client.post(
        "/v1/classify?top_k=2", content=encoded_image(GREEN), headers={"content-type": "image/png"}
    )
    assert len(response.json()["results"][0]["predictions"]) == 2
    response = client.post(
        "/v1/classify?top_k=5", content=encoded_image(GREEN), headers={"content-type": "image/png"}
    )
    assert response.status_code == 422
    assert "top_k" in response.json()["error"]["message"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_every_supported_format_is_decoded(client, fmt: str) -> None:
    response = client.post(
        "/v1/classify",
        content=encoded_image(BLUE, (40, 30), fmt),
        headers={"content-type": f"image/{fmt.lower()}"},
    )
    assert response.status_code == 200, response.text
    assert top_label(response.json()["results"][0]) == "blue"


@pytest.mark.parametrize(
    "mode,colour",
    [("L", 0), ("RGBA", (200, 0, 0, 128)), ("CMYK", (0, 255, 255, 0)), ("P", 0), ("I;16", 0)],
)
def test_any_mode_is_converted_to_rgb(client, mode: str, colour) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    response = client.post(
        "/v1/classify",
        content=encoded_image(colour, (12, 9), fmt, mode),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert top_label(response.json()["results"][0]) in {"red", "dark"}


def test_animated_gif_uses_the_first_frame(client) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in (GREEN, RED, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = client.post(
        "/v1/classify", content=buffer.getvalue(), headers={"content-type": "image/gif"}
    )
    assert top_label(response.json()["results"][0]) == "green"


def test_wrong_content_type_is_415(client) -> None:
    response = client.post("/v1/classify", content=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_unsupported_image_format_is_415(client) -> None:
    response = client.post(
        "/v1/classify",
        content=encoded_image(RED, fmt="TIFF"),
        headers={"content-type": "image/tiff"},
    )
    assert response.status_code == 415
    assert "TIFF" in response.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"not an image at all", encoded_image(RED, fmt="PNG")[:40]])
def test_corrupt_or_truncated_images_are_400(client, body: bytes) -> None:
    response = client.post("/v1/classify", content=body, headers={"content-type": "image/png"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


def test_empty_body_is_400(client) -> None:
    response = client.post("/v1/classify", content=b"", headers={"content-type": "image/jpeg"})
    assert response.status_code == 400


def test_multipart_without_file_parts_is_422(client) -> None:
    response = client.post(
        "/v1/classify",
        data={"other": "x"},
        files=[("picture", ("a.png", encoded_image(RED), "image/png"))],
    )
    assert response.status_code == 422
    assert "file" in response.json()["error"]["message"]


def test_the_failing_file_is_named(client) -> None:
    files = [
        ("file", ("a.png", encoded_image(RED), "image/png")),
        ("file", ("b.png", b"garbage", "image/png")),
    ]
    response = client.post("/v1/classify", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("file 1:")


def test_too_many_images_is_413(make_client) -> None:
    client = make_client(max_images_per_request=2)
    files = [("file", (f"{i}.png", encoded_image(RED), "image/png")) for i in range(3)]
    assert client.post("/v1/classify", files=files).status_code == 413


def test_image_over_the_pixel_limit_is_413_before_decoding(make_client) -> None:
    client = make_client(max_image_pixels=10_000)
    response = client.post(
        "/v1/classify",
        content=encoded_image(RED, (200, 100)),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "image_too_large"


def test_body_over_the_limit_is_413(make_client) -> None:
    client = make_client(max_body_bytes=2048)
    response = client.post(
        "/v1/classify", content=b"\xff" * 4096, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 413


def test_an_image_to_a_fraud_model_is_400(client) -> None:
    response = client.post(
        "/v1/models/tiny-fraud/classify",
        content=encoded_image(RED),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_model_kind"


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares a huge image, with almost no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_from_its_header(client) -> None:
    response = client.post(
        "/v1/classify",
        content=png_declaring(100_000, 100_000),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 413
    assert "100000x100000" in response.json()["error"]["message"]
    assert client.get("/readyz").status_code == 200


def test_an_image_with_less_data_than_its_header_promises_is_400(client) -> None:
    response = client.post(
        "/v1/classify", content=png_declaring(64, 64), headers={"content-type": "image/png"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
    assert "incomplete" in response.json()["error"]["message"]


def png_with_rows(width: int, height: int, rows: int) -> bytes:
    """A red PNG whose zlib stream is complete but holds `rows` of its `height` scanlines."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    scanlines = (b"\x00" + bytes(RED) * width) * rows
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND", b"")
    )


def noise_image(fmt: str, size: tuple[int, int] = (40, 30), **options: object) -> bytes:
    """Noise, so that every byte of pixel data counts and a cut lands in it."""
    pixels = np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def cut_in_scan_and_closed(jpeg: bytes) -> bytes:
    """A JPEG cut inside its entropy-coded data, then given an end-of-image marker."""
    scan = jpeg.index(b"\xff\xda")
    return jpeg[: (scan + len(jpeg)) // 2] + b"\xff\xd9"


_EXIF = Image.Exif()
_EXIF[0x0112] = 1

INCOMPLETE = {
    # classified before: the decoders fill in what is missing without an error
    "PNG, zlib stream complete, 10 of 16 rows": png_with_rows(16, 16, 10),
    # JPEGs of the model's size take the one call, not Pillow's reduced-scale path.
    "JPEG cut and closed": cut_in_scan_and_closed(noise_image("JPEG", MODEL_SIZE)),
    "progressive JPEG cut and closed": cut_in_scan_and_closed(
        noise_image("JPEG", MODEL_SIZE, progressive=True)
    ),
    # refused before too, but not every message said why
    "PNG cut in its image data": noise_image("PNG")[:-200],
    "JPEG cut": noise_image("JPEG")[:-200],
    "GIF cut": noise_image("GIF")[:-200],
    "WEBP cut": noise_image("WEBP")[:-200],
    "BMP cut": noise_image("BMP")[:-200],
}


@pytest.mark.parametrize("case", INCOMPLETE)
def test_an_image_whose_pixel_data_stops_short_is_400(client, case: str) -> None:
    response = client.post(
        "/v1/classify", content=INCOMPLETE[case], headers={"content-type": "image/png"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"].startswith("the image data is incomplete (truncated)"), error


def test_bad_query_parameters_are_named_in_one_422(client) -> None:
    response = client.post(
        "/v1/models/tiny-image/classify?version=0&top_k=many",
        content=encoded_image(RED),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 422
    fields = {d["field"]: d["message"] for d in response.json()["error"]["details"]}
    assert fields == {
        "query.version": "Input should be greater than or equal to 1",
        "query.top_k": "Input should be a valid integer, unable to parse string as an integer",
    }
    # The route's template, not the raw path, names the request in logs and metrics.
    metrics = client.get("/metrics").text
    assert 'route="/v1/models/{model}/classify"' in metrics
