"""The benchmark harness end to end in its quick mode: real servers, real wrk, real files.

Says nothing about speed; checks that every part runs and the results are complete.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)"
)


def test_quick_benchmark_writes_complete_results(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--systems", "deepserve", "fastapi-noop"]
    run = subprocess.run(
        [*command, "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (json_path,) = tmp_path.glob("*.json")
    results = json.loads(json_path.read_text())
    for model in ("image", "fraud"):
        limit = results["limits"][model]
        assert limit["best_items_per_s"] > 0 and limit["single_p50_ms"] > 0
    measured = {(r["system"], r["workload"], r["concurrency"]) for r in results["results"]}
    for workload in ("image-1", "image-16", "fraud-1", "fraud-100"):
        assert {("deepserve", workload, 1), ("deepserve", workload, 8)} <= measured
    assert ("fastapi-noop", "fraud-1", 8) in measured
    for row in results["results"]:
        assert row["rps"] > 0 and row["errors"] == 0, row
        assert row["p50_ms"] <= row["p99_ms"]
    assert results["systems"]["deepserve"]["start_to_ready_s"] > 0
    assert {t["target"] for t in results["targets"]} >= {"start to ready (s)"}
    stem = json_path.with_suffix("")
    assert "| deepserve | fraud-100 | 8 |" in stem.with_suffix(".md").read_text()
    assert Path(f"{stem}-image.png").stat().st_size > 0
    assert Path(f"{stem}-fraud.png").stat().st_size > 0

    # deepserve beside the two no-ops, side by side: a rate for each in every round.
    beside = results["noop_rounds"]["rps_rounds"]
    assert set(beside) == {"deepserve", "fastapi-noop", "fastapi-noop-lean"}
    assert all(len(rates) == 1 and rates[0] > 0 for rates in beside.values())
    side_by_side = [t for t in results["targets"] if t["target"].endswith("(side by side)")]
    assert len([t for t in side_by_side if "FastAPI no-op" in t["target"]]) == 2

    # The Open Inference Protocol beside /v1: every row answered without an error, wrk's
    # always, perf_analyzer's where it could be installed (else the report says why).
    v2 = results["open_inference"]
    assert not v2["failures"], v2["failures"]
    systems = {(r["system"], r["workload"]) for r in v2["rows"]}
    for workload in ("image-1", "fraud-1"):
        assert ("deepserve /v1 (HTTP, wrk)", workload) in systems
        assert ("deepserve v2 (HTTP, wrk)", workload) in systems
        if not v2["perf_analyzer_unavailable"]:
            assert ("deepserve v2 (gRPC, perf_analyzer)", workload) in systems
    for row in v2["rows"]:
        assert row["rps"] > 0 and row["errors"] == 0, row
    assert Path(f"{stem}-open-inference.png").stat().st_size > 0

    # Stateful fraud scoring beside /score: every payment new, none refused.
    history = {r["system"]: r for r in results["fraud_history"]["rows"]}
    expected = {"/v1/fraud/score (stateless)", "/v1/fraud/transactions, embedded"}
    if shutil.which("redis-server"):
        expected |= {"/v1/fraud/transactions, Redis", "100 per request, Redis"}
    assert expected <= set(history)
    for row in history.values():
        assert row["rps"] > 0 and row["errors"] == 0, row
    assert "## Fraud scoring with history" in stem.with_suffix(".md").read_text()

    # What reasons cost: every mode answered, the in-process rounds at each batch size.
    explained = results["reasons"]
    assert set(explained["http_rps_rounds"]) == {"never", "flagged", "always"}
    assert all(r > 0 for rates in explained["http_rps_rounds"].values() for r in rates)
    in_process = explained["in_process"]["rows_per_s_rounds"]
    assert set(in_process["scored"]) == set(in_process["explained"]) >= {"1", "64"}
    reasons_targets = [t for t in results["targets"] if t["target"].startswith("fraud reasons")]
    assert len(reasons_targets) == 2
    assert "## Reasons (fraud/" in stem.with_suffix(".md").read_text()

    # The 224x224 network: in process at every batch size, served at c=1 and 64.
    large = results["efficientnet"]
    assert large["input"] == "224x224"
    assert set(large["in_process"]["images_per_s"]) == {"1", "4", "8", "16", "32"}
    assert all(rate > 0 for rate in large["in_process"]["images_per_s"].values())
    for level in ("1", "64"):
        for window in large["served"][level]:
            assert window["images_per_s"] > 0 and window["errors"] == 0, window
    assert "## A 224x224 ImageNet network (cat-vs-dog/" in stem.with_suffix(".md").read_text()


def test_litserve_and_mlserver_bodies_carry_the_same_items(tmp_path: Path) -> None:
    """Each peer is sent the items deepserve is sent, in its own documented format."""
    from bench.workloads import WORKLOADS, build, sample_images, sample_transactions

    images, _ = sample_images(4)
    transactions, _ = sample_transactions(200)
    lit = build(WORKLOADS["image-16"], "litserve", images, transactions, tmp_path, bodies=2)
    sent = json.loads(lit.bodies[0].read_bytes())["images"]
    assert lit.path == "/classify" and len(sent) == 16
    assert [base64.b64decode(s) for s in sent[:4]] == images[:4]
    v2 = build(WORKLOADS["image-1"], "mlserver", images, transactions, tmp_path, bodies=2)
    (tensor,) = json.loads(v2.bodies[1].read_bytes())["inputs"]
    assert v2.path == "/v2/models/cifar10/infer" and tensor["shape"] == [1]
    assert base64.b64decode(tensor["data"][0]) == images[1]
    scored = build(WORKLOADS["fraud-100"], "mlserver", images, transactions, tmp_path, bodies=1)
    (rows,) = json.loads(scored.bodies[0].read_bytes())["inputs"]
    assert scored.path == "/v2/models/fraud/infer" and rows["shape"] == [100, 15]
    ours = build(WORKLOADS["fraud-100"], "deepserve", images, transactions, tmp_path, bodies=1)
    sent_tx = json.loads(ours.bodies[0].read_bytes())["transactions"]
    assert rows["data"][:1] == [pytest.approx(sent_tx[0]["amount"])]  # TX_AMOUNT first


def test_triton_bodies_are_v2_with_binary_tensor_data(tmp_path: Path) -> None:
    from bench.workloads import WORKLOADS, build, sample_images, sample_transactions

    images, _ = sample_images(4)
    transactions, _ = sample_transactions(200)
    sent = build(WORKLOADS["image-16"], "triton", images, transactions, tmp_path, bodies=2)
    assert sent.path == "/v2/models/cifar10/infer" and sent.headers is not None
    body = sent.bodies[0].read_bytes()
    length = int(sent.headers[0]["Inference-Header-Content-Length"])
    (tensor,) = json.loads(body[:length])["inputs"]
    assert tensor["shape"] == [16, 1] and tensor["datatype"] == "BYTES"
    assert tensor["parameters"]["binary_data_size"] == len(body) - length
    first = int.from_bytes(body[length : length + 4], "little")
    assert body[length + 4 : length + 4 + first] == images[0]
    rows = build(WORKLOADS["fraud-100"], "triton", images, transactions, tmp_path, bodies=1)
    head = int(rows.headers[0]["Inference-Header-Content-Length"]) if rows.headers else 0
    (features,) = json.loads(rows.bodies[0].read_bytes()[:head])["inputs"]
    assert features["shape"] == [100, 15] and features["parameters"]["binary_data_size"] == 6000


def test_triton_is_also_compared_with_both_driven_by_perf_analyzer() -> None:
    """Triton's own generator drives Triton's rows and deepserve's v2 rows of the same run:
    the target compares those two, beside the wrk comparison."""
    from bench import report

    def row(system: str, workload: str, rps: float) -> dict:
        return {"system": system, "workload": workload, "concurrency": 64, "rps": rps}

    results = {
        "limits": {},
        "systems": {},
        "results": [
            row("deepserve", "fraud-1", 6000.0),
            row("triton", "fraud-1", 3000.0),
            row(report.TRITON_BY_PERF_ANALYZER, "fraud-1", 2500.0),
            row(report.TRITON_BY_PERF_ANALYZER, "image-1", 400.0),
        ],
        "open_inference": {
            "rows": [
                row(report.V2_HTTP_PA, "fraud-1", 2000.0),
                row(report.V2_HTTP_PA, "image-1", 300.0),
            ]
        },
    }
    by_name = {t["target"]: t for t in report.targets(results)}
    assert by_name["fraud-1, c=64: req/s over triton"]["value"] == 2.0
    both = "c=64, both driven by perf_analyzer: deepserve v2 req/s over triton"
    fraud = by_name[f"fraud-1, {both}"]
    assert fraud["value"] == 0.8 and fraud["met"] is False
    image = by_name[f"image-1, {both}"]
    assert image["value"] == 0.75 and image["met"] is None


def test_drift_puts_each_runs_targets_side_by_side() -> None:
    from bench import report

    def run(noop_rps: float | None) -> dict:
        rows = [{"system": "deepserve", "workload": "fraud-1", "concurrency": 64, "rps": 600.0}]
        if noop_rps is not None:
            rows.append(
                {
                    "system": "fastapi-noop",
                    "workload": "fraud-1",
                    "concurrency": 64,
                    "rps": noop_rps,
                }
            )
        machine = {"cpu": "AMD EPYC"}
        return {
            "date": "2026-12-02 21:00:00",
            "machine": machine,
            "limits": {},
            "systems": {},
            "results": rows,
        }

    table = report.drift([("new", run(400.0)), ("old", run(None)), ("older", run(600.0))])
    (line,) = [t for t in table.splitlines() if "idiomatic FastAPI no-op" in t]
    assert line.split(" | ")[1:] == [">= 1.2", "1.5", "—", "1.0 (**no**) |"]
    assert "new (AMD EPYC, 2026-12-02)" in table.splitlines()[0]
