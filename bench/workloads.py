"""The requests the benchmark sends: real CIFAR-10 test JPEGs and real transactions.

Bodies are written to files once and rotated through by wrk. Each system gets the same
items in the request format it documents (deepserve's own, or BentoML's named fields), and
deepserve's Open Inference Protocol (v2) the items of `/v1`'s one-item bodies as tensors.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.wrk import Window, run_window

if TYPE_CHECKING:
    from app.model_card import ModelCard

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
CIFAR = DATASETS / "cifar10-jpeg.tar.gz"
FRAUD = DATASETS / "fraud-transactions.csv.gz"


@dataclass(frozen=True)
class Workload:
    name: str
    model: str  # "image" or "fraud"
    items: int  # per request


WORKLOADS = {
    w.name: w
    for w in (
        Workload("image-1", "image", 1),
        Workload("image-16", "image", 16),
        Workload("fraud-1", "fraud", 1),
        Workload("fraud-100", "fraud", 100),
    )
}


@dataclass(frozen=True)
class Requests:
    path: str
    content_type: str
    bodies: list[Path]
    headers: list[dict[str, str]] | None = None  # per body, besides the Content-Type

    def run(self, base: str, concurrency: int, seconds: float) -> Window:
        """One wrk window of these requests against the server at `base`."""
        return run_window(
            base + self.path, self.content_type, self.bodies, concurrency, seconds, self.headers
        )


@dataclass(frozen=True)
class V2Input:
    """One request's input tensor in the Open Inference Protocol."""

    name: str
    datatype: str
    shape: list[int]  # the batch axis first
    raw: bytes  # little-endian elements; BYTES as a 4-byte length, then the bytes
    values: tuple[float, ...] = ()  # numbers, for JSON


def sample_images(count: int = 100) -> tuple[list[bytes], str]:
    """JPEG bytes, and where they came from."""
    if CIFAR.exists():
        from training.image_data import read_test_jpegs

        images = [data for _, data in read_test_jpegs(CIFAR, per_class=-(-count // 10))]
        return images[:count], f"CIFAR-10 test JPEGs ({CIFAR.name})"
    images = [p.read_bytes() for p in sorted((ROOT / "tests" / "data").glob("*.jpg"))]
    return images, "tests/data JPEGs (the dataset is absent)"


def sample_transactions(count: int = 2000) -> tuple[list[dict], str]:
    """Transactions with their features, as the service takes them, and their source."""
    if FRAUD.exists():
        from training.fraud_data import load_transactions, service_transaction

        frame = load_transactions(str(FRAUD))
        rows = frame.sample(count, random_state=0).to_dict("records")
        return [service_transaction(r) for r in rows], f"{FRAUD.name} (random {count})"
    data = json.loads((ROOT / "tests" / "data" / "transactions.json").read_text())
    return data["transactions"], "tests/data/transactions.json (the dataset is absent)"


def build(
    workload: Workload,
    style: str,
    images: list[bytes],
    transactions: list[dict],
    folder: Path,
    bodies: int = 50,
) -> Requests:
    """Write `bodies` request bodies for `workload` in `style`: "deepserve" (also Ray
    Serve's ingress), "bentoml" (named fields), "litserve" (JSON, images in base64, as its
    examples take them), "mlserver" (its v2 REST JSON: images as base64 BYTES, a
    transaction as the model's FP32 feature row) or "triton" (its v2 HTTP API with binary
    tensor data: images as BYTES, transactions as feature rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    if style == "triton":
        return _triton_requests(workload, images, transactions, folder, bodies)
    paths = []
    content_type = ""
    boundary = uuid.uuid4().hex  # one for all bodies: wrk sends one Content-Type header
    for index in range(bodies):
        start = index * workload.items
        if style in ("litserve", "mlserver"):
            body, content_type = _json_body(workload, style, images, transactions, start)
        elif workload.model == "image":
            chosen = [images[(start + k) % len(images)] for k in range(workload.items)]
            if style == "deepserve" and workload.items == 1:
                body, content_type = chosen[0], "image/jpeg"
            else:
                field = "file" if style == "deepserve" else "images"
                body, content_type = _multipart(field, chosen, boundary)
        else:
            chosen_tx = [
                transactions[(start + k) % len(transactions)] for k in range(workload.items)
            ]
            if style == "deepserve" and workload.items == 1:
                document: object = chosen_tx[0]
            else:
                document = {"transactions": chosen_tx}
            body, content_type = json.dumps(document).encode(), "application/json"
        path = folder / f"{style}-{workload.name}-{index}.body"
        path.write_bytes(body)
        paths.append(path)
    if style == "deepserve":
        route = "/v1/classify" if workload.model == "image" else "/v1/fraud/score"
    elif style == "mlserver":
        route = f"/v2/models/{'cifar10' if workload.model == 'image' else 'fraud'}/infer"
    else:
        route = "/classify" if workload.model == "image" else "/score"
    return Requests(route, content_type, paths)


def _json_body(
    workload: Workload, style: str, images: list[bytes], transactions: list[dict], start: int
) -> tuple[bytes, str]:
    """A LitServe or MLServer body of `workload.items` items from `start` on."""
    items = range(start, start + workload.items)
    if workload.model == "image":
        encoded = [base64.b64encode(images[i % len(images)]).decode() for i in items]
        if style == "litserve":
            document: object = {"images": encoded}
        else:
            tensor = {"name": "images", "datatype": "BYTES", "shape": [len(encoded)]}
            tensor |= {"parameters": {"content_type": "base64"}, "data": encoded}
            document = {"inputs": [tensor]}
    else:
        chosen = [transactions[i % len(transactions)] for i in items]
        if style == "litserve":
            document = chosen[0] if workload.items == 1 else {"transactions": chosen}
        else:
            rows = _feature_rows(chosen)
            tensor = {"name": "features", "datatype": "FP32", "shape": list(rows.shape)}
            document = {"inputs": [tensor | {"data": rows.ravel().tolist()}]}
    return json.dumps(document).encode(), "application/json"


def _triton_requests(
    workload: Workload, images: list[bytes], transactions: list[dict], folder: Path, bodies: int
) -> Requests:
    """Triton's v2 infer bodies of `workload.items` items each, binary tensor data."""
    inputs = []
    for index in range(bodies):
        items = range(index * workload.items, (index + 1) * workload.items)
        if workload.model == "image":
            chosen = [images[i % len(images)] for i in items]
            raw = b"".join(struct.pack("<I", len(data)) + data for data in chosen)
            inputs.append(V2Input("images", "BYTES", [len(chosen), 1], raw))
        else:
            rows = _feature_rows([transactions[i % len(transactions)] for i in items])
            inputs.append(
                V2Input("features", "FP32", list(rows.shape), rows.astype("<f4").tobytes())
            )
    model, output = (
        ("cifar10", "probabilities")
        if workload.model == "image"
        else ("fraud", "fraud_probability")
    )
    return build_v2(inputs, model, output, folder / f"triton-{workload.name}")


def _feature_rows(transactions: list[dict]) -> np.ndarray:
    """The served fraud model's input rows for these transactions, as `/v1` derives them."""
    from app.codecs.transactions import decode_transactions
    from app.serving.repository import read_card
    from bench.inprocess import stateless_version

    card = read_card(stateless_version(ROOT / "models", "fraud"))
    body = json.dumps({"transactions": transactions}).encode()
    rows: np.ndarray = decode_transactions(body, len(transactions)).columns_for(card)
    return rows.astype(np.float32)


def v2_inputs(
    workload: Workload,
    images: list[bytes],
    transactions: list[dict],
    card: ModelCard,
    bodies: int = 50,
) -> list[V2Input]:
    """The items of `build`'s first `bodies` one-item bodies, as the model's v2 input: an
    image as `images` BYTES [1, 1], encoded as sent to `/v1`; a transaction as the features
    `/v1` derives from it, the model's own input FP32 [1, 15] in the card's column order."""
    if workload.items != 1:
        raise ValueError(f"v2 requests carry one item each, not {workload.items}")
    if workload.model == "image":
        return [
            V2Input("images", "BYTES", [1, 1], struct.pack("<I", len(data)) + data)
            for data in (images[i % len(images)] for i in range(bodies))
        ]
    from app.codecs.transactions import decode_transactions

    chosen = [transactions[i % len(transactions)] for i in range(bodies)]
    body = json.dumps({"transactions": chosen}).encode()
    rows = decode_transactions(body, len(chosen)).columns_for(card).astype("<f4")  # [bodies, 15]
    return [
        V2Input(card.input.name, "FP32", [1, rows.shape[1]], row.tobytes(), tuple(row.tolist()))
        for row in rows
    ]


def build_v2(
    inputs: list[V2Input], model: str, output: str, folder: Path, version: int | None = None
) -> Requests:
    """Infer bodies in the binary tensor data extension, as perf_analyzer writes them: the
    JSON header (its length in `Inference-Header-Content-Length`), then the input's bytes;
    the output asked for as binary data."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, headers = [], []
    for index, tensor in enumerate(inputs):
        header = {
            "id": "",
            "inputs": [
                {
                    "name": tensor.name,
                    "datatype": tensor.datatype,
                    "shape": tensor.shape,
                    "parameters": {"binary_data_size": len(tensor.raw)},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}],
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        path = folder / f"v2-{model}-{index}.body"
        path.write_bytes(head + tensor.raw)
        paths.append(path)
        headers.append({"Inference-Header-Content-Length": str(len(head))})
    route = f"/v2/models/{model}" + ("" if version is None else f"/versions/{version}")
    return Requests(f"{route}/infer", "application/octet-stream", paths, headers)


def _multipart(field: str, images: list[bytes], boundary: str) -> tuple[bytes, str]:
    parts = []
    for i, data in enumerate(images):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{i}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
