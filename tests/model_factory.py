"""Tiny but real ONNX models, built with onnx.helper, and their model cards."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from app.fraud.features import FEATURE_SETS, FEATURES
from app.model_card import ModelCard

IMAGE_LABELS = ["red", "green", "blue", "dark"]
IMAGE_SIZE = 8


def _provenance() -> dict:
    return {
        "command": "tests/model_factory.py",
        "data": "none: weights set by hand",
        "seed": 0,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        "library_versions": {"onnx": onnx.__version__},
    }


def _save(graph: onnx.GraphProto, card: dict, root: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = root / card["name"] / str(card["version"])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "model.json").write_text(ModelCard.model_validate(card).model_dump_json(indent=2))
    return folder


def image_model(
    root: Path,
    name: str = "tiny-image",
    version: int = 1,
    *,
    max_batch_size: int = 8,
    max_queue_delay_ms: float = 0.0,
) -> Path:
    """uint8 `[n, 8, 8, 3]` -> softmax over red/green/blue/dark from the mean colour."""
    # logits = mean_rgb/255 @ W + b: each primary colour wins its own class, black wins "dark".
    weights = np.array([[8, -4, -4, -6], [-4, 8, -4, -6], [-4, -4, 8, -6]], dtype=np.float32)
    bias = np.array([0, 0, 0, 2], dtype=np.float32)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["unit"]),
        helper.make_node("MatMul", ["unit", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-image",
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.UINT8, ["batch", IMAGE_SIZE, IMAGE_SIZE, 3]
            )
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        ],
    )
    card = {
        "name": name,
        "version": version,
        "kind": "image_classifier",
        "inputs": [
            {"name": "pixels", "dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3]}
        ],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None, 4]}],
        "output_transform": "none",
        "labels": IMAGE_LABELS,
        "image": {
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "resize": "stretch",
            "layout": "NHWC",
            "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1], "in_graph": True},
        },
        "batching": {"max_batch_size": max_batch_size, "max_queue_delay_ms": max_queue_delay_ms},
        "metrics": {"note": "hand-set weights"},
        "provenance": _provenance(),
    }
    return _save(graph, card, root)


def fraud_model(
    root: Path,
    name: str = "tiny-fraud",
    version: int = 1,
    *,
    max_batch_size: int = 64,
    max_queue_delay_ms: float = 0.0,
    amount_weight: float = 0.02,
    reasons: bool = False,
    reasons_score: bool = True,
    feature_set: str = "benchmark-15",
) -> Path:
    """float32 `[n, 15]` -> sigmoid(amount * w - 4 + night + 3 risk_7d): big amounts look
    like fraud. With `reasons`, also its reasons graph: for a logistic model, exactly
    coefficient times (value - baseline), with `REASONS_BASELINE`; with `reasons_score`, it
    gives the probability too (as published versions from 7 on do). With the `history-17`
    set, `[n, 17]` (`history-20`: 20), and the amount over the card's earlier mean adds to
    the logit."""
    columns = FEATURE_SETS[feature_set]
    weights = np.zeros((len(columns), 1), dtype=np.float32)
    weights[columns.index("TX_AMOUNT"), 0] = amount_weight
    weights[columns.index("TX_DURING_NIGHT"), 0] = 1.0
    weights[columns.index("TERMINAL_ID_RISK_7DAY_WINDOW"), 0] = 3.0
    if "CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW" in columns:
        weights[columns.index("CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW"), 0] = 1.0
    baseline = REASONS_BASELINE[: len(columns)]
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["fraud_probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-fraud",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(columns)])],
        [helper.make_tensor_value_info("fraud_probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.array([-4.0], dtype=np.float32), "b"),
        ],
    )
    card = {
        "name": name,
        "version": version,
        "kind": "tabular_classifier",
        "inputs": [{"name": "features", "dtype": "float32", "shape": [None, len(columns)]}],
        "outputs": [{"name": "fraud_probability", "dtype": "float32", "shape": [None, 1]}],
        "output_transform": "none",
        "labels": ["genuine", "fraud"],
        "tabular": {
            "features": list(columns),
            "feature_set": feature_set,
            "scaling_in_graph": True,
        },
        "thresholds": {"review": 0.5, "decline": 0.9, "rule": "set by hand for tests"},
        "batching": {"max_batch_size": max_batch_size, "max_queue_delay_ms": max_queue_delay_ms},
        "provenance": _provenance(),
    }
    if reasons:
        card["reasons"] = {
            "method": "gradient_times_difference",
            "baseline": baseline.tolist(),
        }
        if reasons_score:
            card["reasons"]["score_output"] = "fraud_probability"
    folder = _save(graph, card, root)
    if reasons:
        attributions = [
            helper.make_node("Sub", ["features", "baseline"], ["away"]),
            helper.make_node("Mul", ["away", "coefficients"], ["attributions"]),
        ]
        outputs = [
            helper.make_tensor_value_info(
                "attributions", TensorProto.FLOAT, ["batch", len(columns)]
            )
        ]
        if reasons_score:  # the model's nodes first, then the attributions'
            attributions = [*nodes, *attributions]
            outputs = [*graph.output, *outputs]
        explain = helper.make_graph(
            attributions,
            "tiny-fraud-reasons",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(columns)])],
            outputs,
            initializer=[
                numpy_helper.from_array(baseline, "baseline"),
                numpy_helper.from_array(weights[:, 0].copy(), "coefficients"),
                *(graph.initializer if reasons_score else ()),
            ],
        )
        model = helper.make_model(explain, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, folder / "reasons.onnx")
    return folder


# Where the tiny fraud model's reasons are measured from: an average payment.
REASONS_BASELINE = np.array(
    [
        50.0,
        0.3,
        0.15,
        2,
        50.0,
        10,
        50.0,
        40,
        50.0,
        5,
        0.01,
        30,
        0.02,
        120,
        0.02,
        1.0,
        0.1,
        0.5,
        0.4,
        0.01,
    ],
    dtype=np.float32,
)


def fraud_probability(
    amount: float, night: bool = False, risk_7d: float = 0.0, amount_weight: float = 0.02
) -> float:
    """What `fraud_model` computes, for checking answers."""
    return float(1 / (1 + np.exp(-(amount * amount_weight - 4 + night + 3 * risk_7d))))


def fraud_model_failing_on_large_amounts(root: Path, name: str = "fragile") -> Path:
    """Like `fraud_model`, but ONNX Runtime raises for any batch holding an amount of 1000
    or more."""
    folder = fraud_model(root, name=name)
    look_amounts_up(folder / "model.onnx", table_size=1000)
    return folder


def look_amounts_up(path: Path, table_size: int) -> None:
    """Make a fraud graph also look each row's amount up in a table of `table_size` zeros
    and add what it finds to its output (which changes nothing): ONNX Runtime raises for a
    batch holding an amount of `table_size` or more, so for every batch when it is 0."""
    model = onnx.load(path)
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(table_size, dtype=np.float32), "table"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "second"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "columns"),
        ]
    )
    output = graph.node[-1].output[0]
    graph.node[-1].output[0] = "unchecked"
    graph.node.extend(
        [
            helper.make_node("Slice", ["features", "first", "second", "columns"], ["amount"]),
            helper.make_node("Cast", ["amount"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["looked_up"]),
            helper.make_node("Add", ["unchecked", "looked_up"], [output]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)


def slow_fraud_model(
    root: Path, name: str = "slow-fraud", iterations: int = 1000, max_batch_size: int = 8
) -> Path:
    """Like `fraud_model`, but every row also goes through `iterations` rounds of a 256x256
    matrix product whose result is multiplied by zero: same answers, known CPU cost per row."""
    folder = fraud_model(root, name=name, max_batch_size=max_batch_size)
    model = onnx.load(folder / "model.onnx")
    graph = model.graph
    generator = np.random.default_rng(0)
    width = 256
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "W_loop"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
        ],
        "burn",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, ["batch", width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", width]),
        ],
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(
                generator.normal(0, 0.05, (len(FEATURES), width)).astype(np.float32), "W_in"
            ),
            numpy_helper.from_array(
                # A gain of 1.5 under tanh: the loop's state neither dies out nor grows.
                # Fading, it would spend a stretch in denormal floats, which costs some CPUs
                # (Intel Xeon) many times more than others (AMD EPYC), and zeros (what
                # warm-up and `seconds_per_batch` time) not at all.
                generator.normal(0, 1.5 / np.sqrt(width), (width, width)).astype(np.float32),
                "W_loop",
            ),
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "always"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ]
    )
    sigmoid = graph.node[-1]
    sigmoid.input[0] = "burnt_logit"
    extra = [
        helper.make_node("MatMul", ["features", "W_in"], ["state0"]),
        helper.make_node("Loop", ["trips", "always", "state0"], ["burnt"], body=body),
        helper.make_node("ReduceSum", ["burnt", "axis"], ["burnt_sum"], keepdims=1),
        helper.make_node("Mul", ["burnt_sum", "zero"], ["nothing"]),
        helper.make_node("Add", ["logit", "nothing"], ["burnt_logit"]),
    ]
    for node in extra:
        graph.node.insert(len(graph.node) - 1, node)
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    return folder


def seconds_per_batch(folder: Path, rows: int = 1, runs: int = 7) -> float:
    """How long this machine takes to run one batch of `rows` rows through a fraud model in
    one thread, as the server would with one intra-op thread: the median of `runs`. Tests
    that depend on a model's speed derive their numbers from this."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    inputs = {"features": np.zeros((rows, len(FEATURES)), dtype=np.float32)}
    session.run(None, inputs)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, inputs)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings))


def calibrated_slow_fraud_model(
    root: Path, seconds: float, name: str = "slow-fraud", max_batch_size: int = 8
) -> tuple[Path, float]:
    """A `slow_fraud_model` whose one-row batch takes about `seconds` on this machine;
    returns its folder and the seconds measured. The number of rounds comes from a timed
    probe, so tests that need a model slower than HTTP get one on any CPU."""
    probe_iterations = 500
    with tempfile.TemporaryDirectory() as scratch:
        probe = slow_fraud_model(Path(scratch), name, probe_iterations, max_batch_size)
        per_iteration = seconds_per_batch(probe) / probe_iterations
    iterations = max(10, round(seconds / per_iteration))
    folder = slow_fraud_model(root, name, iterations, max_batch_size)
    return folder, seconds_per_batch(folder)
