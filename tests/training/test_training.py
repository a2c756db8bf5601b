"""The training package on small generated data: train, export, parity, card, served."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from app.fraud.features import ALL_FEATURES, FEATURES
from app.model_card import ModelCard
from training import plots
from training.cnn import (
    ResNetSmall,
    ServingImageModel,
    WhitenedConvNet,
    build_classifier,
    predict_probabilities,
)
from training.export import ParityError, check_parity, export_onnx, half_precision_card
from training.fraud import (
    DerivedFeatures,
    FraudConfig,
    FraudMLP,
    PiecewiseLinearEncoding,
    ServingFraudModel,
    choose_thresholds,
    train_fraud,
)
from training.fraud_bounds import (
    BOUNDS,
    auc_by_announcement,
    bound_scores,
    unannounced,
)
from training.fraud_data import add_features, feature_matrix, load_transactions, split_window
from training.fraud_evaluate import FraudEvaluationConfig, evaluate_fraud
from training.fraud_metrics import card_precision_top_k
from training.fraud_reasons_check import deletion_test
from training.images import ImageConfig, TransferConfig, _mirror, train_images
from training.run_dirs import new_run_dir
from training.schedules import lr_multiplier
from training.transfer_experiment import (
    TransferExperimentConfig,
    best_on_validation,
    run_transfer_experiment,
)

COLOURS = {
    "reddish": (200, 40, 40),
    "bluish": (40, 40, 200),
    "greenish": (40, 200, 40),
    "yellowish": (200, 200, 40),
}


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/{train,test}/<class>/*.png: noisy images of two colours."""
    generator = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for name, colour in COLOURS.items():
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noise = generator.integers(-40, 40, size=(32, 32, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return tmp_path / "images"


def test_image_training_exports_a_model_the_service_serves(
    image_folder: Path, tmp_path: Path, make_client, monkeypatch
) -> None:
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    models = tmp_path / "models"
    config = ImageConfig(
        data=str(image_folder),
        name="colours",
        models_dir=str(models),
        runs_dir=str(tmp_path / "runs"),
        widths=[8, 16],
        epochs=3,
        batch_size=16,
        lr=0.05,
    )
    first = train_images(config)
    second = train_images(dataclasses.replace(config, fp16=True))
    assert first == models / "colours" / "1"
    assert second == models / "colours" / "2"  # the next free version; never overwritten
    card = ModelCard.model_validate_json((first / "model.json").read_text())
    assert card.labels == sorted(COLOURS)
    assert card.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    assert card.fp16 is None and not (first / "model.fp16.onnx").exists()
    half = ModelCard.model_validate_json((second / "model.json").read_text()).fp16
    assert half is not None and half.parity_max_abs_diff <= half.parity_tolerance
    # Same inputs and outputs as the float32 graph, so that the service feeds both alike.
    sessions = [
        ort.InferenceSession(str(second / f), providers=["CPUExecutionProvider"])
        for f in ("model.onnx", half.file)
    ]
    pixels = np.stack([np.asarray(Image.open(p)) for p in (image_folder / "test").glob("*/*")])
    full, reduced = (s.run(None, {"pixels": pixels})[0] for s in sessions)
    assert reduced.dtype == np.float32 and reduced.shape == full.shape
    assert 0 < np.abs(full - reduced).max() <= half.parity_tolerance  # rounded, and close
    assert card.provenance.command.startswith("python -m training")
    assert card.provenance.library_versions["torch"] == torch.__version__
    run = next((tmp_path / "runs").iterdir())
    assert {
        "curves.png",
        "confusion_matrix.png",
        "lr_schedule.png",
        "metrics.json",
        "checkpoint.pt",
        "config.json",
    } <= {p.name for p in run.iterdir()}

    client = make_client(repo=models, default_image_model="colours")
    test_image = next((image_folder / "test" / "bluish").iterdir()).read_bytes()
    response = client.post(
        "/v1/classify?version=1", content=test_image, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200
    scores = {p["label"]: p["score"] for p in response.json()["results"][0]["predictions"]}
    assert set(scores) == set(COLOURS)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    served = client.get("/v1/models/colours").json()["versions"]
    assert {v["version"]: (v["precision"], v["providers"][0]) for v in served} == {
        1: ("fp32", "CPUExecutionProvider"),
        2: ("fp32", "CPUExecutionProvider"),  # the float16 graph is for GPUs only
    }


def test_parity_check_fails_when_runtimes_disagree(tmp_path: Path) -> None:
    model = ServingImageModel(ResNetSmall(3, [8], 8), (0.5,) * 3, (0.25,) * 3).eval()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.from_numpy(pixels[:2]), path, "pixels", "probabilities")
    assert check_parity(model, path, pixels) <= 1e-4
    other = ServingImageModel(ResNetSmall(3, [8], 8), (0.5,) * 3, (0.25,) * 3).eval()
    with pytest.raises(ParityError):
        check_parity(other, path, pixels)


def test_a_float16_graph_that_loses_parity_is_not_published(tmp_path: Path) -> None:
    class Loud(torch.nn.Module):  # values past float16's largest finite one, 65,504
        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return pixels.float().mean((1, 2)) * 1000.0

    loud = Loud()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    full = tmp_path / "model.onnx"
    export_onnx(loud, torch.from_numpy(pixels[:2]), full, "pixels", "probabilities")
    check_parity(loud, full, pixels)  # float32 holds
    assert half_precision_card(loud, full, tmp_path / "model.fp16.onnx", pixels) is None
    assert not (tmp_path / "model.fp16.onnx").exists()


def test_test_time_augmentation_averages_the_views_it_names() -> None:
    torch.manual_seed(0)
    # Pixels in, logits out, with no symmetry, so every view gives other probabilities.
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4)).eval()
    x = torch.randn(5, 3, 6, 6)

    def softmax(view: torch.Tensor) -> torch.Tensor:
        return torch.softmax(classifier(view), dim=1)

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[:, :, :6, :6], padded[:, :, 2:, 2:]
    assert torch.equal(up_left[:, :, 1:, 1:], x[:, :, :5, :5])  # shifted by one pixel
    by_hand = {
        "none": softmax(x),
        "flip": (softmax(x) + softmax(x.flip(3))) / 2,
        "flip-translate": (
            2 * (softmax(x) + softmax(x.flip(3)))
            + softmax(up_left)
            + softmax(up_left.flip(3))
            + softmax(down_right)
            + softmax(down_right.flip(3))
        )
        / 8,
    }
    with torch.no_grad():
        for tta, expected in by_hand.items():
            got = predict_probabilities(classifier, x, tta)
            assert torch.allclose(got, expected, atol=1e-6), tta
    assert not torch.allclose(by_hand["flip"], by_hand["flip-translate"], atol=1e-3)


def test_translated_views_export_and_onnx_runtime_agrees(tmp_path: Path) -> None:
    torch.manual_seed(0)
    classifier = WhitenedConvNet(3, [8, 16])
    pixels = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    model = ServingImageModel(classifier, (0.5,) * 3, (0.25,) * 3, tta="flip-translate").eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.from_numpy(pixels[:2]), path, "pixels", "probabilities")
    assert check_parity(model, path, pixels) <= 1e-4


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "onecycle"])
def test_schedules_start_and_end_where_they_should(name) -> None:
    values = [lr_multiplier(name, s, 100) for s in range(101)]
    assert all(0.0 <= v <= 1.0 for v in values)
    if name == "onecycle":
        assert values[0] == 0.0 and max(values) == 1.0 and values[-1] == 0.0
        floors = [lr_multiplier(name, s, 100, 0.25, start=0.2, end=0.07) for s in range(101)]
        assert floors[0] == pytest.approx(0.2) and floors[25] == 1.0
        assert floors[-1] == pytest.approx(0.07)
    if name == "cosine":
        assert values[0] == 1.0 and values[-1] == pytest.approx(0.0)
    if name == "step":
        assert values[0] == 1.0 and values[-1] == pytest.approx(0.01)


def synthetic_transactions(days: int = 50, seed: int = 0) -> pd.DataFrame:
    """Transactions where amounts above 220 are fraud, like the simulator's first pattern."""
    generator = np.random.default_rng(seed)
    n = days * 120
    # Whole minutes: many transactions share a timestamp, as a handful do in the real data.
    seconds = np.sort(generator.integers(0, days * 1440, n)) * 60
    amounts = np.round(generator.gamma(2.0, 50.0, n), 2)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n),
            "TX_DATETIME": pd.Timestamp("2018-04-01") + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": generator.integers(0, 40, n),
            "TERMINAL_ID": generator.integers(0, 25, n),
            "TX_AMOUNT": amounts,
            "TX_FRAUD": ((amounts > 220) | (generator.random(n) < 0.01)).astype(np.int64),
        }
    )


def test_features_match_their_definitions() -> None:
    frame = add_features(synthetic_transactions(days=40))
    day = pd.Timedelta(days=1)
    for index in np.random.default_rng(1).choice(len(frame), 150, replace=False):
        row = frame.iloc[index]
        t = row["TX_DATETIME"]
        earlier = frame.iloc[: index + 1]  # ties are ordered by TRANSACTION_ID
        for n in (1, 7, 30):
            mine = earlier[
                (earlier.CUSTOMER_ID == row.CUSTOMER_ID) & (t - n * day < earlier.TX_DATETIME)
            ]
            assert row[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] == len(mine)
            assert row[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] == pytest.approx(
                mine.TX_AMOUNT.mean()
            )
            theirs = earlier[
                (earlier.TERMINAL_ID == row.TERMINAL_ID)
                & (t - (7 + n) * day < earlier.TX_DATETIME)
                & (t - 7 * day >= earlier.TX_DATETIME)
            ]
            assert row[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] == len(theirs)
            risk = theirs.TX_FRAUD.mean() if len(theirs) else 0.0
            assert row[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] == pytest.approx(risk)
        assert row["TX_DURING_WEEKEND"] == int(t.weekday() >= 5)
        assert row["TX_DURING_NIGHT"] == int(t.hour < 7)
        before = frame.iloc[:index]  # the card's earlier payments: the row itself excluded
        mine = before[(before.CUSTOMER_ID == row.CUSTOMER_ID) & (t - 30 * day < before.TX_DATETIME)]
        mean = mine.TX_AMOUNT.mean() if len(mine) else None
        over = row.TX_AMOUNT / mean if mean else 1.0
        assert row["CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW"] == pytest.approx(over)
        recent = mine[t - 14 * day < mine.TX_DATETIME]
        high = (3 * mean < recent.TX_AMOUNT).sum() if mean else 0
        assert row["CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY_WINDOW"] == high
    matrix = feature_matrix(frame)
    assert matrix.shape == (len(frame), len(FEATURES))
    np.testing.assert_array_equal(
        matrix[:, FEATURES.index("TX_DURING_NIGHT")], frame["TX_DURING_NIGHT"].to_numpy(np.float32)
    )


def test_the_test_window_leaves_out_known_compromised_cards() -> None:
    frame = add_features(synthetic_transactions(days=40))
    window = split_window(frame, "2018-04-20", 7, 7, 7)
    known = set(window.train.loc[window.train.TX_FRAUD == 1, "CUSTOMER_ID"])
    assert not known & set(window.test.CUSTOMER_ID)
    assert window.test.TX_DATETIME.min() >= pd.Timestamp("2018-05-04")
    assert window.test.TX_DATETIME.max() < pd.Timestamp("2018-05-11")


def test_piecewise_linear_encoding_by_hand() -> None:
    x = np.array([[0.0, 7.0], [1.0, 7.0], [2.0, 7.0], [3.0, 7.0], [4.0, 7.0]], dtype=np.float32)
    encoding = PiecewiseLinearEncoding.fit(x, bins=2)
    # Column 0: quantile edges 0, 2, 4, so two bins; column 1 is constant: no bins.
    assert encoding.width_out == 2
    encoded = encoding(torch.tensor([[1.0, 7.0], [3.0, 7.0], [9.0, 7.0], [-1.0, 7.0]]))
    expected = [[0.5, 0.0], [1.0, 0.5], [1.0, 1.0], [0.0, 0.0]]
    np.testing.assert_allclose(encoded.numpy(), expected)


def test_target_aware_bins_put_an_edge_where_the_label_changes() -> None:
    # Every amount past 220 is fraud (as in the benchmark's data); few amounts get there, so
    # quantile bins put the step inside one bin, and the encoding cannot see it.
    amounts = np.random.default_rng(0).gamma(2.0, 45.0, size=(5000, 1))
    labels = (amounts[:, 0] > 220).astype(np.float32)
    assert 50 < labels.sum() < 250
    quantiles = PiecewiseLinearEncoding.fit(amounts, bins=8)
    aware = PiecewiseLinearEncoding.fit(amounts, bins=8, y=labels)
    genuine, fraud = amounts[amounts <= 220].max(), amounts[amounts > 220].min()
    # Halfway between the largest genuine amount and the smallest fraud: one new edge.
    (added,) = set(aware.lower.tolist()) - set(quantiles.lower.tolist())
    assert added == pytest.approx((genuine + fraud) / 2, rel=1e-6)

    # So one input of the MLP is 0 for every genuine payment and above 0 for every fraud:
    # a line separates them, where quantile bins leave the step inside a bin.
    def separating(encoding: PiecewiseLinearEncoding) -> bool:
        encoded = encoding(torch.from_numpy(amounts).float()).numpy()
        zero_below = (encoded[labels == 0] == 0).all(0)
        above_zero = (encoded[labels == 1] > 0).all(0)
        return bool((zero_below & above_zero).any())

    assert separating(aware) and not separating(quantiles)


def test_plain_members_see_the_scaled_features_without_their_encoding() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, size=(200, len(FEATURES))).astype(np.float32)
    derive = DerivedFeatures()
    derived = derive(torch.from_numpy(x)).numpy()
    mean, std = derived.mean(0), derived.std(0) + 1e-6
    encoding = PiecewiseLinearEncoding.fit(derived, bins=4)
    torch.manual_seed(0)
    encoded_member = FraudMLP(derive.width + encoding.width_out, [8], 0.0)
    plain_member = FraudMLP(derive.width, [8], 0.0)
    model = ServingFraudModel([encoded_member], derive, mean, std, encoding, [plain_member])
    model.eval()

    features = torch.from_numpy(x[:5])
    scaled = (derive(features) - torch.from_numpy(mean)) / torch.from_numpy(std)
    with_encoding = torch.cat([scaled, encoding(derive(features))], dim=1)
    expected = (
        torch.sigmoid(encoded_member(with_encoding)) + torch.sigmoid(plain_member(scaled))
    ) / 2
    with torch.no_grad():
        np.testing.assert_allclose(model(features).squeeze(1), expected.detach(), rtol=1e-5)


def test_card_precision_counts_fraudulent_cards_among_the_top_k() -> None:
    test = pd.DataFrame(
        {
            "TX_DATETIME": pd.to_datetime(["2018-01-01 10:00"] * 4 + ["2018-01-02 10:00"] * 2),
            "CUSTOMER_ID": [1, 1, 2, 3, 1, 3],
            "TX_FRAUD": [0, 1, 0, 0, 1, 1],
        }
    )
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.9, 0.1])
    # Day 1, top 2 cards: 1 (fraud) and 2. Day 2: card 1 already found, so only card 3.
    assert card_precision_top_k(test, scores, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_thresholds_follow_the_stated_rule() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.01, 0.0])
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    review, decline = choose_thresholds(scores, labels, review_rate=0.5, decline_precision=0.75)
    # Declining from 0.3 up catches 4 frauds in 5; any lower cut-off falls below 0.75.
    assert decline == 0.3
    assert review == pytest.approx(np.quantile(scores, 0.5))


@pytest.fixture
def transactions_csv(tmp_path: Path, monkeypatch) -> Path:
    """50 days of synthetic transactions in the CSV layout, with a private feature cache."""
    csv = tmp_path / "tx.csv"
    frame = synthetic_transactions(days=50)
    frame.assign(TX_TIME_SECONDS=0, TX_TIME_DAYS=0, TX_FRAUD_SCENARIO=0).to_csv(csv, index=False)
    monkeypatch.setattr("training.fraud_data.CACHE_DIR", tmp_path / "cache")
    return csv


def test_fraud_training_exports_a_model_with_thresholds(
    tmp_path: Path, transactions_csv: Path
) -> None:
    folder = train_fraud(
        FraudConfig(
            data=str(transactions_csv),
            models_dir=str(tmp_path / "models"),
            runs_dir=str(tmp_path / "runs"),
            train_start="2018-05-01",
            epochs=15,
            hidden=[16],
            batch_size=32,
            lr=0.01,
            ensemble=2,
            plain_members=1,
            val_fraction=0.3,
            review_alert_rate=0.05,  # enough flagged rows for the deletion test below
        )
    )
    assert folder is not None
    card = ModelCard.model_validate_json((folder / "model.json").read_text())
    assert card.tabular is not None and card.tabular.features == list(ALL_FEATURES)
    assert card.tabular.feature_set == "history-20"
    assert card.thresholds is not None and card.thresholds.review <= card.thresholds.decline
    assert float(card.metrics["test_auc_roc"]) > 0.8  # amount > 220 is easy to learn
    assert card.reasons is not None and len(card.reasons.baseline) == len(ALL_FEATURES)
    assert (folder / card.reasons.file).is_file()
    assert float(card.metrics["reasons_onnx_parity_max_abs_diff"]) < 1e-4
    # The deletion test on a small slice (every day, every card: the mechanics are under
    # test here, not the model): the reasons name what drives the score.
    rows = feature_matrix(load_transactions(str(transactions_csv)), ALL_FEATURES)
    check = deletion_test(folder, card, rows, flagged=50, top=3, seed=0)
    assert check["transactions"] >= 5
    assert check["fall_top_reasons"] >= 2 * check["fall_random_features"]  # one feature rules
    plots.deletion_curves(check["curve"], card.name, tmp_path / "deletion.png")
    assert (tmp_path / "deletion.png").stat().st_size > 0
    run = next((tmp_path / "runs").iterdir())
    assert {"curves.png", "roc_pr.png", "metrics.json"} <= {p.name for p in run.iterdir()}


def test_evaluation_runs_every_model_on_every_fold(tmp_path: Path, transactions_csv: Path) -> None:
    results = evaluate_fraud(
        FraudEvaluationConfig(
            data=str(transactions_csv),
            runs_dir=str(tmp_path / "runs"),
            folds=["2018-04-25", "2018-05-02"],
            epochs=3,
            hidden=[8],
            ensemble=1,
            plain_members=1,
        )
    )
    assert set(results) == {
        f"ours: {model}, {feature_set}"
        for model in ("MLP", "logistic regression", "gradient-boosted trees")
        for feature_set in ("benchmark-15", "history-20")
    } | set(BOUNDS.values())
    for metrics in results.values():
        assert all(len(values) == 2 for values in metrics.values())
    # No fraud of this data is a terminal's (its pattern is 0): both bounds rank every one
    # first.
    for bound in BOUNDS.values():
        assert results[bound]["auc_roc"] == [1.0, 1.0]
        assert results[bound]["average_precision"] == [1.0, 1.0]
    # Amounts above 220 are fraud: every model learns that, on either set.
    assert np.mean(results["ours: logistic regression, benchmark-15"]["auc_roc"]) > 0.8
    assert np.mean(results["ours: logistic regression, history-20"]["auc_roc"]) > 0.8
    table = (next((tmp_path / "runs").iterdir()) / "results.md").read_text()
    assert "published: XGBoost (tuned)" in table and "ours: MLP, history-20" in table
    assert "fold 2018-05-02" in table  # each fold's figures, not only the means
    assert "Unannounced frauds, by fold: 0.0%, 0.0%" in table
    assert "| ours: MLP, history-20 | knowable |" in table


def test_unannounced_frauds_are_a_compromised_terminals_before_any_is_known() -> None:
    now, day = pd.Timestamp("2018-05-20 12:00"), pd.Timedelta(days=1)

    def payments(rows: list[tuple[int, pd.Timestamp, int, int]]) -> pd.DataFrame:
        return pd.DataFrame(
            rows, columns=["TRANSACTION_ID", "TX_DATETIME", "TERMINAL_ID", "TX_FRAUD"]
        )

    # Test payments, all now, each at its own terminal:
    # 1 the terminal's pattern, none of it known there; 2 the same, one of its frauds known
    # (8 days before); 3 an amount over 220; 4 genuine; 5 a compromised card; 6 the
    # terminal's pattern where another pattern's fraud is known and its own fraud of 6 days
    # before is not yet; 7 and 8 the terminal's pattern with its earlier fraud exactly 37
    # days before (out of the window) and exactly 7 days before (in it).
    test = payments([(i, now, 10 + i, 0 if i == 4 else 1) for i in range(1, 9)])
    earlier = payments(
        [
            (20, now - 8 * day, 12, 1),
            (21, now - 8 * day, 16, 1),
            (22, now - 6 * day, 16, 1),
            (23, now - 37 * day, 17, 1),
            (24, now - 7 * day, 18, 1),
        ]
    )
    scenarios = pd.Series(
        [2, 2, 1, 0, 3, 2, 2, 2, 2, 1, 2, 2, 2], index=[1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23, 24]
    )
    history = pd.concat([earlier, test])
    hidden = unannounced(test, history, scenarios)
    assert hidden.tolist() == [True, False, False, False, False, True, True, False]
    scores = bound_scores(test, hidden)
    fraud = test["TX_FRAUD"].to_numpy() == 1
    assert (scores["perfect"][fraud] == 1.0).all() and scores["perfect"][3] < 0.5
    # The knowable bound ranks the unannounced frauds among the genuine payments.
    assert (scores["knowable"][fraud & ~hidden] == 1.0).all()
    assert (scores["knowable"][hidden | ~fraud] < 0.5).all()
    # A scorer that puts every knowable fraud above the genuine payment, and every
    # unannounced one below it.
    ranked = np.where(hidden, 0.1, np.where(fraud, 0.9, 0.5))
    split = auc_by_announcement(test, hidden, ranked)
    assert split == {"knowable": 1.0, "unannounced": 0.0}


def test_image_training_resumes_from_its_checkpoint(
    image_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    common = {
        "data": str(image_folder),
        "widths": [8],
        "batch_size": 16,
        "export": False,
        "tta": "none",
    }
    train_images(ImageConfig(runs_dir=str(tmp_path / "first"), epochs=3, **common))
    checkpoint = next((tmp_path / "first").iterdir()) / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["epoch"] == 3
    # Pretend the run stopped after epoch 1: resuming trains epochs 2 and 3 only.
    state["epoch"], state["history"] = 1, state["history"][:1]
    torch.save(state, checkpoint)
    train_images(
        ImageConfig(runs_dir=str(tmp_path / "second"), epochs=3, resume=str(checkpoint), **common)
    )
    resumed = torch.load(
        next((tmp_path / "second").iterdir()) / "checkpoint.pt", weights_only=False
    )
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    rebuilt = build_classifier(resumed["arch"], resumed["constructor_args"])
    rebuilt.load_state_dict(resumed["model"])  # the checkpoint rebuilds alone
    assert resumed["constructor_args"] == {"num_classes": 4, "widths": [8], "dropout": 0.0}


def test_transfer_frozen_keeps_the_backbone_and_finetune_moves_it(
    image_folder: Path, tmp_path: Path, make_client, monkeypatch
) -> None:
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    common = {"data": str(image_folder), "widths": [8, 16], "batch_size": 16, "lr": 0.05}
    train_images(
        ImageConfig(
            runs_dir=str(tmp_path / "pretrain"),
            classes=["reddish", "bluish"],
            epochs=2,
            export=False,
            **common,
        )
    )
    checkpoint = next((tmp_path / "pretrain").iterdir()) / "checkpoint.pt"
    pretrained = torch.load(checkpoint, weights_only=False)["model"]
    models = tmp_path / "models"
    for mode in ("frozen", "finetune", "scratch"):
        target = train_images(
            TransferConfig(
                checkpoint=str(checkpoint),
                mode=mode,
                name=f"green-or-blue-{mode}",
                classes=["greenish", "bluish"],
                train_per_class=12,
                epochs=2,
                models_dir=str(models),
                runs_dir=str(tmp_path / mode),
                **common,
            )
        )
        assert target is not None
        card = ModelCard.model_validate_json((target / "model.json").read_text())
        assert card.labels == ["greenish", "bluish"]
        assert card.metrics["transfer_mode"] == mode and card.metrics["train_images"] == 24
        state = torch.load(next((tmp_path / mode).iterdir()) / "checkpoint.pt", weights_only=False)
        backbone = [k for k in pretrained if k.startswith("backbone.") and "conv" in k]
        unchanged = [torch.equal(state["model"][k], pretrained[k]) for k in backbone]
        if mode == "frozen":
            assert all(unchanged)
        else:
            assert not any(unchanged)
        assert state["model"]["head.weight"].shape == (2, 16)

    client = make_client(repo=models, default_image_model="green-or-blue-frozen")
    test_image = next((image_folder / "test" / "greenish").iterdir()).read_bytes()
    response = client.post(
        "/v1/classify", content=test_image, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200
    assert {p["label"] for p in response.json()["results"][0]["predictions"]} == {
        "greenish",
        "bluish",
    }


def test_photo_sized_inputs_are_resized_and_center_cropped(
    tmp_path: Path, make_client, monkeypatch
) -> None:
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    generator = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, colour in list(COLOURS.items())[:2]:
            folder = tmp_path / "photos" / split / name
            folder.mkdir(parents=True)
            for i in range(6):
                noise = generator.integers(-40, 40, size=(90, 120, 3))  # landscape, not square
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    target = train_images(
        ImageConfig(
            data=str(tmp_path / "photos"),
            name="photos",
            image_size=64,
            resize_shorter_to=72,
            widths=[8],
            epochs=1,
            batch_size=6,
            models_dir=str(tmp_path / "models"),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert target is not None
    card = ModelCard.model_validate_json((target / "model.json").read_text())
    assert card.image is not None
    assert (card.image.height, card.image.width) == (64, 64)
    assert card.image.resize == "shorter_side_then_center_crop"
    assert card.image.resize_shorter_to == 72
    assert card.inputs[0].shape == [None, 64, 64, 3]
    client = make_client(repo=tmp_path / "models", default_image_model="photos")
    photo = next((tmp_path / "photos" / "test" / "reddish").iterdir()).read_bytes()
    response = client.post("/v1/classify", content=photo, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200


def test_whitening_layer_decorrelates_the_patches_it_was_fitted_on() -> None:
    generator = torch.Generator().manual_seed(0)
    # Correlated channels: green and blue follow red.
    red = torch.randn(64, 1, 16, 16, generator=generator)
    images = torch.cat([red, 0.8 * red, -0.5 * red], 1)
    images = images + 0.3 * torch.randn(images.shape, generator=generator)
    model = WhitenedConvNet(3, [8])
    model.init_whitening(images, eps=0.0)
    half = 3 * WhitenedConvNet.WHITEN_KERNEL**2
    out = F.conv2d(images, model.whiten.weight[:half])  # [n, 12, h', w'], no bias
    flat = out.permute(0, 2, 3, 1).reshape(-1, half)
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(half), atol=1e-3)
    assert torch.equal(model.whiten.weight[half:], -model.whiten.weight[:half])
    assert not model.whiten.weight.requires_grad


def test_alternating_flips_show_each_image_both_ways_every_two_epochs() -> None:
    first = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    generator = torch.Generator().manual_seed(1)
    epoch0 = _mirror("alternating", first, 0, generator)
    epoch1 = _mirror("alternating", first, 1, generator)
    epoch2 = _mirror("alternating", first, 2, generator)
    assert epoch0 is not None and epoch1 is not None and epoch2 is not None
    assert torch.equal(epoch0 ^ epoch1, torch.ones(1000, dtype=torch.bool))
    assert torch.equal(epoch0, epoch2)
    assert 400 < int(epoch0.sum()) < 600
    assert _mirror("none", first, 0, generator) is None


def test_transfer_experiment_compares_four_ways_and_publishes_the_best_on_validation(
    image_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    published = run_transfer_experiment(
        TransferExperimentConfig(
            data=str(image_folder),
            name="green-or-blue",
            classes=["greenish", "bluish"],
            pretrain_epochs=1,
            train_per_class=12,
            image_size=32,
            epochs=1,
            models_dir=str(tmp_path / "models"),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert published == tmp_path / "models" / "green-or-blue" / "1"
    card = ModelCard.model_validate_json((published / "model.json").read_text())
    assert (card.name, card.version, card.labels) == ("green-or-blue", 1, ["greenish", "bluish"])
    run = next((tmp_path / "runs").glob("green-or-blue-experiment-*"))
    results = json.loads((run / "results.json").read_text())
    assert list(results["results"]) == [
        "imagenet-frozen",
        "imagenet-finetune",
        "scratch",
        "cifar-finetune",
    ]
    chosen = results["results"][results["best"]]
    assert results["best"] == best_on_validation(results["results"])
    assert all(
        r["val_images"] == 4 and r["train_images"] == 20 for r in results["results"].values()
    )
    assert card.metrics["transfer_mode"] == chosen["transfer_mode"]
    assert card.metrics["backbone"] == chosen["backbone"]
    assert card.metrics["test_accuracy"] == chosen["test_accuracy"]
    backbones = {name: r["backbone"] for name, r in results["results"].items()}
    assert backbones["imagenet-finetune"] == "efficientnet-lite0"
    assert backbones["cifar-finetune"] == "checkpoint"
    pretrain = json.loads(next(run.glob("pretrain-*/config.json")).read_text())
    assert pretrain["classes"] == ["reddish", "yellowish"]  # every class but the targets
    assert (run / "accuracy.png").exists() and (run / "results.md").exists()
    assert not (run / "candidates").exists()


def test_the_published_run_is_chosen_on_validation_never_on_test() -> None:
    results = {
        "imagenet-frozen": {"val_accuracy": 0.80, "test_accuracy": 0.95},
        "imagenet-finetune": {"val_accuracy": 0.86, "test_accuracy": 0.82},
        "scratch": {"val_accuracy": 0.86, "test_accuracy": 0.90},
    }
    assert best_on_validation(results) == "imagenet-finetune"


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("training.run_dirs.time.strftime", lambda _: "20261123-093201")
    made = [new_run_dir(tmp_path / "runs", "fraud-evaluation") for _ in range(3)]
    assert [p.name for p in made] == [
        "fraud-evaluation-20261123-093201",
        "fraud-evaluation-20261123-093201-2",
        "fraud-evaluation-20261123-093201-3",
    ]
    assert all(p.is_dir() for p in made)


def test_no_feature_sees_the_future() -> None:
    """Rows after a moment shuffled (amounts, cards, terminals, labels): no feature of a row
    before it changes. Only what the service has at a payment's moment goes into it."""
    frame = synthetic_transactions(days=40)
    cut = pd.Timestamp("2018-04-25")
    later = frame["TX_DATETIME"] >= cut
    rng = np.random.default_rng(1)
    shuffled = frame.copy()
    for column in ("TX_AMOUNT", "CUSTOMER_ID", "TERMINAL_ID", "TX_FRAUD"):
        shuffled.loc[later, column] = rng.permutation(frame.loc[later, column].to_numpy())
    assert not shuffled.equals(frame)
    before, after = add_features(frame), add_features(shuffled)
    kept = before["TX_DATETIME"] < cut
    assert kept.sum() > 100 and (~kept).sum() > 100
    pd.testing.assert_frame_equal(
        before.loc[kept, list(ALL_FEATURES)], after.loc[kept.to_numpy(), list(ALL_FEATURES)]
    )
