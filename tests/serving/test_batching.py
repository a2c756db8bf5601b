"""The dynamic batcher, driven with a real ONNX Runtime session of a tiny model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest

from app.errors import DeadlineExceeded, InferenceFailed, Overloaded, ShuttingDown
from app.fraud.features import FEATURES
from app.serving.batching import DynamicBatcher
from tests import model_factory

if TYPE_CHECKING:
    from app.serving.runtime import ModelRuntime
    from app.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def run_model(tmp_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    folder = model_factory.fraud_model(tmp_path)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda rows: session.run(None, {"features": rows})[0]


def rows(n: int, seed: int = 0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return generator.uniform(0, 300, size=(n, len(FEATURES))).astype(np.float32)


def far() -> float:
    return time.monotonic() + 30.0


def make(run: Callable[[np.ndarray], np.ndarray], **options: float) -> DynamicBatcher:
    settings = {"max_batch_size": 8, "max_queue_delay_ms": 0.0, "max_queue_items": 1000}
    settings.update(options)
    batcher = DynamicBatcher(run, name="test", **settings)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_full_batch_goes_without_waiting_for_the_delay(run_model) -> None:
    batcher = make(run_model, max_batch_size=4, max_queue_delay_ms=10_000)
    started = time.monotonic()
    await asyncio.gather(*(batcher.infer(rows(1, i), far()) for i in range(4)))
    assert time.monotonic() - started < 2.0
    assert list(batcher.stats.sizes) == [4]
    await batcher.close()


async def test_partial_batch_goes_when_the_oldest_has_waited_the_delay(run_model) -> None:
    batcher = make(run_model, max_batch_size=64, max_queue_delay_ms=150)
    started = time.monotonic()
    await asyncio.gather(*(batcher.infer(rows(1, i), far()) for i in range(3)))
    elapsed = time.monotonic() - started
    assert 0.14 <= elapsed < 2.0
    assert list(batcher.stats.sizes) == [3]
    await batcher.close()


async def test_zero_delay_sends_at_once_when_idle(run_model) -> None:
    batcher = make(run_model, max_batch_size=64, max_queue_delay_ms=0)
    await batcher.infer(rows(1), far())
    await batcher.infer(rows(2), far())
    assert list(batcher.stats.sizes) == [1, 2]
    await batcher.close()


async def test_batched_outputs_equal_unbatched_for_any_mix(run_model) -> None:
    generator = np.random.default_rng(7)
    for max_batch_size in (1, 3, 8, 64):
        batcher = make(run_model, max_batch_size=max_batch_size, max_queue_delay_ms=2)
        requests = [rows(int(generator.integers(1, 20)), seed) for seed in range(25)]
        outputs = await asyncio.gather(*(batcher.infer(r, far()) for r in requests))
        for request, output in zip(requests, outputs, strict=True):
            np.testing.assert_allclose(output, run_model(request), rtol=1e-6, atol=1e-7)
        assert max(batcher.stats.sizes) <= max_batch_size
        assert sum(batcher.stats.sizes) == sum(len(r) for r in requests)
        await batcher.close()


async def test_a_large_request_is_split_and_reassembled_in_order(run_model) -> None:
    batcher = make(run_model, max_batch_size=4)
    request = rows(10)
    output = await batcher.infer(request, far())
    np.testing.assert_allclose(output, run_model(request), rtol=1e-6)
    assert list(batcher.stats.sizes) == [4, 4, 2]
    await batcher.close()


async def test_a_large_request_does_not_starve_later_ones(run_model) -> None:
    # Slow each batch down so both requests are queued together.
    def slow(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return run_model(batch)

    batcher = make(slow, max_batch_size=4)
    big = asyncio.ensure_future(batcher.infer(rows(40), far()))
    await asyncio.sleep(0)
    small = await batcher.infer(rows(1, 3), far())
    np.testing.assert_allclose(small, run_model(rows(1, 3)), rtol=1e-6)
    assert len(await big) == 40
    await batcher.close()


async def test_an_inference_error_reaches_every_request_of_the_batch(run_model) -> None:
    calls = 0

    def fail_once(batch: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device lost")
        return run_model(batch)

    gate = threading.Event()

    def gated(batch: np.ndarray) -> np.ndarray:
        gate.wait(5)
        return fail_once(batch)

    batcher = make(gated, max_batch_size=8, max_queue_delay_ms=50)
    pending = [asyncio.ensure_future(batcher.infer(rows(1, i), far())) for i in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(o, InferenceFailed) for o in outcomes)
    assert "device lost" in str(outcomes[0])
    # The batcher keeps serving.
    np.testing.assert_allclose(await batcher.infer(rows(1), far()), run_model(rows(1)))
    await batcher.close()


async def test_a_request_past_its_deadline_leaves_the_queue_with_504(run_model) -> None:
    batcher = make(run_model, max_batch_size=64, max_queue_delay_ms=5_000)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await batcher.infer(rows(2), time.monotonic() + 0.05)
    assert time.monotonic() - started < 1.0
    assert batcher.queued_rows == 0
    assert batcher.stats.expired == 1
    assert list(batcher.stats.sizes) == []
    await batcher.close()


async def test_a_full_queue_rejects_at_once(run_model) -> None:
    gate = threading.Event()

    def blocked(batch: np.ndarray) -> np.ndarray:
        gate.wait(5)
        return run_model(batch)

    batcher = make(blocked, max_batch_size=2, max_queue_items=4)
    running = asyncio.ensure_future(batcher.infer(rows(2), far()))  # taken by the worker
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(batcher.infer(rows(2, i), far())) for i in range(2)]
    await asyncio.sleep(0.01)
    assert batcher.queued_rows == 4
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await batcher.infer(rows(1), far())
    assert time.monotonic() - started < 0.1
    assert batcher.stats.rejected == 1
    gate.set()
    assert [len(r) for r in await asyncio.gather(running, *queued)] == [2, 2, 2]
    await batcher.close()


async def test_a_request_that_would_miss_its_deadline_is_refused_at_once(run_model) -> None:
    gate = threading.Event()

    def blocked(batch: np.ndarray) -> np.ndarray:
        gate.wait(5)
        return run_model(batch)

    batcher = make(blocked, max_batch_size=2)
    batcher.row_seconds = 0.2  # as if warm-up had timed 0.4 s per full batch
    running = asyncio.ensure_future(batcher.infer(rows(2), far()))  # taken by the worker
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.infer(rows(2, 1), far()))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    # 2 rows queued ahead: 0.4 s, more than half of the 0.6 s it has.
    with pytest.raises(Overloaded, match="deadline"):
        await batcher.infer(rows(2), time.monotonic() + 0.6)
    assert time.monotonic() - started < 0.1
    assert batcher.stats.rejected == 1
    patient = asyncio.ensure_future(batcher.infer(rows(2, 2), time.monotonic() + 5))
    gate.set()
    assert [len(r) for r in await asyncio.gather(running, queued, patient)] == [2, 2, 2]
    await batcher.close()


async def test_admitted_requests_on_their_way_count_in_the_wait_of_later_ones(
    run_model,
) -> None:
    batcher = make(run_model, max_batch_size=8)
    batcher.row_seconds = 0.1
    deadline = time.monotonic() + 10  # room for about 5 s of rows ahead
    # A burst admitted before any of its bodies is read: each guesses one row, and counts.
    burst = [batcher.admit(None, deadline) for _ in range(50)]
    with pytest.raises(Overloaded, match="queued or arriving") as refused:
        batcher.admit(None, deadline)
    assert refused.value.retry_after_s == 1
    # One with 3 s to go may wait 1.5 s: the 5 s of rows ahead are 3.5 s too many.
    with pytest.raises(Overloaded, match="retry in 4 s") as refused:
        batcher.admit(None, time.monotonic() + 3)
    assert refused.value.retry_after_s == 4
    # One turns out to hold 3 rows, one fails on its way (a bad body) and leaves room again.
    burst[0].count(3)
    for admission in (burst[1], burst[1], burst[2], burst[3]):  # twice is harmless
        admission.release()
    assert batcher.expected_wait() == pytest.approx((50 + 2 - 3) * 0.1)
    late = batcher.admit(None, deadline)
    # Queued with its admission, a request is not refused again, and stops counting as
    # arriving: its rows are now queued ones.
    outputs = await batcher.infer(rows(3), deadline, burst[0])
    assert len(outputs) == 3
    assert batcher.expected_wait() == pytest.approx((49 + 1 - 3) * 0.1)  # with `late`
    for admission in [*burst, late]:
        admission.release()
    assert batcher.expected_wait() == 0
    await batcher.close()


async def test_full_batches_keep_the_per_row_time_current(run_model) -> None:
    batcher = make(run_model, max_batch_size=4)
    batcher.row_seconds = 10.0  # far too slow: full batches pull it towards the truth
    for i in range(30):
        await batcher.infer(rows(4, i), far())
    assert batcher.row_seconds < 10.0 * 0.9**30 + 0.01
    await batcher.close()


async def test_close_answers_what_is_queued_then_refuses(run_model) -> None:
    batcher = make(run_model, max_batch_size=64, max_queue_delay_ms=200)
    pending = asyncio.ensure_future(batcher.infer(rows(3), far()))
    await asyncio.sleep(0.01)
    await batcher.close()
    assert len(await pending) == 3
    with pytest.raises(ShuttingDown):
        await batcher.infer(rows(1), far())


async def test_a_cancelled_waiter_leaves_the_queue(run_model) -> None:
    batcher = make(run_model, max_batch_size=64, max_queue_delay_ms=100)
    gone = asyncio.ensure_future(batcher.infer(rows(5), far()))
    kept = asyncio.ensure_future(batcher.infer(rows(2), far()))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0)
    assert batcher.queued_rows == 2
    assert len(await kept) == 2
    assert list(batcher.stats.sizes) == [2]
    await batcher.close()


@pytest.mark.parametrize("inline_rows", [0, 4, 64])
async def test_quick_batches_run_on_the_event_loop_and_the_rest_on_the_model_thread(
    run_model, inline_rows: int
) -> None:
    threads: dict[int, int] = {}  # batch size -> thread that ran it

    def recording(batch: np.ndarray) -> np.ndarray:
        threads[len(batch)] = threading.get_ident()
        return run_model(batch)

    batcher = make(recording, max_batch_size=8)
    batcher.inline_rows = inline_rows
    requests = [rows(n, n) for n in (1, 8, 3, 5)]
    for request in requests:  # one at a time: each is one batch of its own size
        np.testing.assert_allclose(await batcher.infer(request, far()), run_model(request))
    loop_thread = threading.get_ident()
    for size, thread in threads.items():
        assert (thread == loop_thread) == (size <= inline_rows), (size, inline_rows)
    await batcher.close()


async def test_an_inline_batch_that_fails_fails_only_its_requests(run_model) -> None:
    def fail_on_big_amounts(batch: np.ndarray) -> np.ndarray:
        if batch.max() > 1e6:
            raise RuntimeError("bad batch")
        return run_model(batch)

    batcher = make(fail_on_big_amounts, max_batch_size=8)
    batcher.inline_rows = 8
    bad = rows(2)
    bad[0, 0] = 1e7
    with pytest.raises(InferenceFailed, match="bad batch"):
        await batcher.infer(bad, far())
    np.testing.assert_allclose(await batcher.infer(rows(2), far()), run_model(rows(2)))
    await batcher.close()


def _newest_runtimes(root: Path, settings: Settings) -> Iterator[tuple[str, ModelRuntime]]:
    """Each model's newest version under `root`, loaded on the CPU, not yet warmed up."""
    from app.serving.providers import ProviderChoice
    from app.serving.repository import discover, read_card
    from app.serving.runtime import ModelRuntime

    for name, versions in discover(root).items():
        runtime = ModelRuntime.load(
            read_card(versions[-1]),
            versions[-1].onnx_path,
            settings.registry_config().runtime,
            ProviderChoice(["CPUExecutionProvider"], "t"),
        )
        yield name, runtime


async def test_warm_up_lets_only_quick_models_run_inline(tmp_path: Path) -> None:
    from app.settings import Settings

    settings = Settings(_env_file=None, intra_op_threads=1)
    model_factory.fraud_model(tmp_path, max_batch_size=64)
    # One row of the slow model takes ten times the inline budget on this machine.
    model_factory.calibrated_slow_fraud_model(
        tmp_path, 10 * settings.inline_budget_ms / 1000, max_batch_size=8
    )
    inline, row_seconds = {}, {}
    for name, runtime in _newest_runtimes(tmp_path, settings):
        runtime.warm_up()
        inline[name] = runtime.batcher.inline_rows
        row_seconds[name] = runtime.batcher.row_seconds
    assert inline["tiny-fraud"] >= 1  # a 15-feature logistic model takes microseconds
    assert inline["slow-fraud"] == 0
    assert 0 < row_seconds["tiny-fraud"] < row_seconds["slow-fraud"]


async def test_warm_up_skips_a_full_batch_too_long_for_start_up(tmp_path: Path) -> None:
    from app.serving.runtime import FULL_BATCH_WARM_UP_S
    from app.settings import Settings

    settings = Settings(_env_file=None, intra_op_threads=1)
    # Past the inline budget at one row, and 64 rows at that rate take well over what
    # start-up spends on a full batch; 4 rows would not.
    one_row_s = FULL_BATCH_WARM_UP_S / 16
    model_factory.calibrated_slow_fraud_model(tmp_path, one_row_s, "long", max_batch_size=64)
    model_factory.calibrated_slow_fraud_model(tmp_path, one_row_s, "short", max_batch_size=4)
    sizes: dict[str, list[int]] = {}
    for name, runtime in _newest_runtimes(tmp_path, settings):
        run_batch = runtime.run_batch
        sizes[name] = []

        def recorded(rows: np.ndarray, name: str = name, run=run_batch) -> np.ndarray:
            sizes[name].append(len(rows))
            return run(rows)

        runtime.run_batch = recorded  # type: ignore[method-assign]
        runtime.warm_up()
        assert runtime.batcher.row_seconds > 0
    assert set(sizes["long"]) == {1}  # one row, timed; no full batch of 64
    assert set(sizes["short"]) == {1, 4}  # the full batch of 4 runs, once
    assert sizes["short"].count(4) == 1


async def test_deferred_rows_are_made_as_their_batch_forms_and_fail_alone(run_model) -> None:
    from app.serving.batching import DeferredRows

    batcher = make(run_model, max_batch_size=4, max_queue_delay_ms=10_000)
    made: list[int] = []

    def deferred(seed: int) -> DeferredRows:
        def make_rows() -> np.ndarray:
            made.append(seed)
            if seed == 2:
                raise ValueError("no rows for this one")
            return rows(1, seed)

        return DeferredRows(1, make_rows)

    seen: list[int] = []
    waiting = [
        batcher.infer(deferred(i), far(), on_outputs=lambda _, i=i: seen.append(i))
        for i in range(4)
    ]
    await asyncio.sleep(0.05)
    assert made == []  # queued, not made: the batch is not full yet
    waiting.append(batcher.infer(rows(1, 9), far()))  # full now (4 rows of 5 queued)
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert made == [0, 1, 2, 3]  # in arrival order, when the batch formed
    assert isinstance(outcomes[2], ValueError)
    for i in (0, 1, 3):
        np.testing.assert_allclose(outcomes[i], run_model(rows(1, i)), rtol=1e-6)
    assert sorted(seen) == [0, 1, 3]  # on_outputs ran for each answered request
    await batcher.close()
