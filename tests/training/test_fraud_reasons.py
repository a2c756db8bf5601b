"""The reasons graph: its hand-written backward pass equals autograd, takes the baseline's
side on a bin edge, is exact for a logistic model, gives the model's own probability, and
ONNX Runtime runs it as PyTorch does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.fraud.features import FEATURE_SETS, FEATURES
from training.export import ParityError, check_agreement, check_parity, export_onnx
from training.fraud import DerivedFeatures, FraudMLP, PiecewiseLinearEncoding, ServingFraudModel
from training.fraud_reasons import FraudReasons, autograd_attributions


def raw_features(rows: int, seed: int = 0, columns: tuple[str, ...] = FEATURES) -> np.ndarray:
    """Values shaped like the benchmark's: amounts, 0/1 flags, counts, averages, risks (and
    the history's ratios and counts)."""
    rng = np.random.default_rng(seed)
    x = np.empty((rows, len(columns)), dtype=np.float32)
    for column, name in enumerate(columns):
        if name == "TX_AMOUNT" or "AVG_AMOUNT" in name or "AMOUNT_OVER" in name:
            x[:, column] = rng.gamma(2.0, 40.0, rows)
        elif name.startswith("TX_DURING"):
            x[:, column] = rng.integers(0, 2, rows)
        elif "_NB_" in name:
            x[:, column] = rng.poisson(20, rows)
        else:
            x[:, column] = rng.beta(0.5, 8.0, rows)
    return x


def ensemble(x: np.ndarray, columns: tuple[str, ...] = FEATURES) -> ServingFraudModel:
    """A small model of the served kind, untrained (the weights' values do not matter)."""
    torch.manual_seed(0)
    derive = DerivedFeatures(columns=columns)
    with torch.no_grad():
        derived = derive(torch.from_numpy(x)).numpy()
    encoding = PiecewiseLinearEncoding.fit(derived, 8)
    members = [FraudMLP(derive.width + encoding.width_out, [32, 16], 0.3) for _ in range(2)]
    plain = [FraudMLP(derive.width, [32], 0.3)]
    mean, std = derived.mean(0), derived.std(0) + 1e-6
    return ServingFraudModel(members, derive, mean, std, encoding, plain).eval()


def on_integers(columns: tuple[str, ...]) -> np.ndarray:
    """The columns whose values are whole (counts, 0/1 flags): they sit on bin edges."""
    return np.array([name.startswith("TX_DURING") or "_NB_" in name for name in columns])


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_the_written_out_gradient_equals_autograd(feature_set: str) -> None:
    columns = FEATURE_SETS[feature_set]
    x = raw_features(400, columns=columns)
    model = ensemble(x[:300], columns)
    baseline = x[:300].mean(0)
    off_edges = x[300:] + 0.37 * on_integers(columns)  # outside the fitted range too
    features = torch.from_numpy(off_edges.astype(np.float32))
    with torch.no_grad():
        explicit = FraudReasons(model, baseline)(features)[1].numpy()
    reference = autograd_attributions(model, features, torch.from_numpy(baseline)).numpy()
    assert np.abs(reference).max() > 0.05  # a test of something
    np.testing.assert_allclose(explicit, reference, rtol=1e-3, atol=1e-5)


def linear_in_its_encoding(x: np.ndarray) -> ServingFraudModel:
    """A logistic model over the scaled features and their bins: its slopes change only at
    the bin edges."""
    torch.manual_seed(3)
    derive = DerivedFeatures()
    with torch.no_grad():
        derived = derive(torch.from_numpy(x)).numpy()
    encoding = PiecewiseLinearEncoding.fit(derived, 8)
    member = FraudMLP(derive.width + encoding.width_out, [], 0.0)
    mean, std = derived.mean(0), derived.std(0) + 1e-6
    return ServingFraudModel([member], derive, mean, std, encoding).eval()


def test_on_a_bin_edge_the_gradient_is_the_one_on_the_baselines_side() -> None:
    """Whole counts and flags sit on edges: the slope taken is autograd's a step toward
    the baseline (for a flag of 1, its bin's; the flat above would give nothing)."""
    x = raw_features(400)
    model = linear_in_its_encoding(x[:300])
    baseline = x[:300].mean(0)
    features = torch.from_numpy(x[300:])
    step = (1e-3 * on_integers(FEATURES) * np.sign(baseline - x[300:])).astype(np.float32)
    with torch.no_grad():
        explicit = FraudReasons(model, baseline)(features)[1].numpy()
    toward = autograd_attributions(
        model, features, torch.from_numpy(baseline), at=features + torch.from_numpy(step)
    ).numpy()
    np.testing.assert_allclose(explicit, toward, rtol=2e-3, atol=1e-6)
    on_edge = autograd_attributions(model, features, torch.from_numpy(baseline)).numpy()
    assert np.abs(explicit - on_edge).max() > 0.01  # autograd's sum of both sides differs


def test_just_off_an_edge_between_bins_of_different_widths_the_slope_is_the_bins_own() -> None:
    """Amounts a little past an edge (5 margins of the narrowest bin, on either side) are in
    one bin, whatever the widths of the two: autograd's slope there, once."""
    x = raw_features(400)
    model = linear_in_its_encoding(x[:300])
    encoding = model.encoding
    assert encoding is not None
    amount = FEATURES.index("TX_AMOUNT")
    bins = (encoding.columns == amount).nonzero().flatten()
    widths = encoding.width[bins]
    assert float(widths.max() / widths.min()) > 5  # quantile bins of a skewed column
    edges = encoding.lower[bins][1:].double()  # between bins, in the derived (log) space
    offset = 5 * 1e-4 * float(widths.min())
    logged = torch.cat([edges - offset, edges + offset])
    baseline = x[:300].mean(0)
    rows = np.tile(baseline, (len(logged), 1))
    rows[:, amount] = torch.expm1(logged).numpy()  # the amount is logged before the bins
    features = torch.from_numpy(rows.astype(np.float32))
    with torch.no_grad():
        explicit = FraudReasons(model, baseline)(features)[1].numpy()
    reference = autograd_attributions(model, features, torch.from_numpy(baseline)).numpy()
    np.testing.assert_allclose(explicit[:, amount], reference[:, amount], rtol=1e-3)


def test_the_graph_gives_the_models_own_probability() -> None:
    x = raw_features(200)
    model = ensemble(x)
    with torch.no_grad():
        probability, _ = FraudReasons(model, x.mean(0))(torch.from_numpy(x))
        np.testing.assert_allclose(probability.numpy(), model(torch.from_numpy(x)).numpy())


def test_a_logistic_model_gets_coefficient_times_value_minus_baseline() -> None:
    x = raw_features(200)
    torch.manual_seed(1)
    member = FraudMLP(len(FEATURES), [], 0.0)  # no hidden layer: logistic regression
    mean, std = x.mean(0), x.std(0) + 1e-6
    model = ServingFraudModel([member], DerivedFeatures(enabled=False), mean, std).eval()
    baseline = mean
    with torch.no_grad():
        attributions = FraudReasons(model, baseline)(torch.from_numpy(x))[1].numpy()
    coefficients = member.net[0].weight.detach().numpy()[0] / std  # per raw feature
    np.testing.assert_allclose(attributions, coefficients * (x - baseline), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoded", [True, False])
def test_onnx_runtime_runs_the_reasons_graph_as_pytorch_does(tmp_path: Path, encoded: bool) -> None:
    x = raw_features(100)
    model = ensemble(x)
    if not encoded:
        model.encoding = None
        model.members = torch.nn.ModuleList()
    reasons = FraudReasons(model, x.mean(0))
    path = tmp_path / "reasons.onnx"
    outputs = ("fraud_probability", "attributions")
    export_onnx(reasons, torch.from_numpy(x[:2]), path, "features", outputs)
    assert check_parity(reasons, path, x) < 1e-4  # on whole counts: the same side of edges
    # Its probability is the model's, in ONNX Runtime too; another model's is refused.
    model_path = tmp_path / "model.onnx"
    export_onnx(model, torch.from_numpy(x[:2]), model_path, "features", "fraud_probability")
    assert check_agreement(model_path, path, "fraud_probability", x) <= 1e-6
    other = ensemble(raw_features(100, seed=1))
    if not encoded:
        other.encoding, other.members = None, torch.nn.ModuleList()
    other_path = tmp_path / "other.onnx"
    export_onnx(other, torch.from_numpy(x[:2]), other_path, "features", "fraud_probability")
    with pytest.raises(ParityError):
        check_agreement(other_path, path, "fraud_probability", x)


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
SERVED = Path(__file__).resolve().parents[2] / "models" / "fraud"


@pytest.mark.skipif(
    not (DATA / "fraud-transactions.csv.gz").exists(), reason=f"needs the dataset in {DATA}"
)
def test_the_served_models_reasons_name_what_drives_its_scores() -> None:
    """The deletion test on a slice of real flagged transactions (the full one, on 1,000,
    is `python -m training reasons-check`): their top three reasons set to the baseline
    lower the mean probability at least three times as much as three random features."""
    import pandas as pd

    from app.model_card import ModelCard
    from training.fraud_data import COLUMNS, add_features, feature_matrix
    from training.fraud_reasons_check import deletion_test

    folder = max((p for p in SERVED.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    card = ModelCard.model_validate_json((folder / "model.json").read_text())
    assert card.reasons is not None, f"{folder} has no reasons graph"
    frame = pd.read_csv(
        DATA / "fraud-transactions.csv.gz", usecols=COLUMNS, parse_dates=["TX_DATETIME"]
    )
    when = frame["TX_DATETIME"]
    # The served model's test week, with the 37 days its windows look back.
    frame = add_features(frame[(when >= "2018-07-01") & (when < "2018-08-15")])
    assert card.tabular is not None
    columns = tuple(card.tabular.features)
    rows = feature_matrix(frame[frame["TX_DATETIME"] >= "2018-08-08"], columns)
    check = deletion_test(folder, card, rows, flagged=300, top=3, seed=0)
    assert check["transactions"] == 300
    assert check["fall_top_reasons"] >= 3 * check["fall_random_features"]


def test_a_payment_the_model_is_sure_of_still_gets_finite_reasons(tmp_path: Path) -> None:
    """p rounds to 1 in float32 (1 - p to 0): the weights are taken in logs, not divided."""
    x = raw_features(50)
    x[:, FEATURES.index("TX_AMOUNT")] = 1e4  # logit 1e5 with the coefficient below
    torch.manual_seed(2)
    members = [FraudMLP(len(FEATURES), [], 0.0) for _ in range(2)]
    for member in members:  # the same logistic model twice: its exact answer is known
        with torch.no_grad():
            member.net[0].weight.copy_(members[0].net[0].weight)
            member.net[0].weight[0, FEATURES.index("TX_AMOUNT")] = 10.0
            member.net[0].bias.zero_()
    mean, std = np.zeros(len(FEATURES), np.float32), np.ones(len(FEATURES), np.float32)
    model = ServingFraudModel(members, DerivedFeatures(enabled=False), mean, std).eval()
    baseline = np.full(len(FEATURES), 0.5, dtype=np.float32)
    reasons = FraudReasons(model, baseline)
    with torch.no_grad():
        assert float(model(torch.from_numpy(x)).min()) == 1.0  # saturated
        attributions = reasons(torch.from_numpy(x))[1].numpy()
    coefficients = members[0].net[0].weight.detach().numpy()[0]
    np.testing.assert_allclose(attributions, coefficients * (x - baseline), rtol=1e-5)
    path = tmp_path / "reasons.onnx"
    export_onnx(reasons, torch.from_numpy(x[:2]), path, "features", ("p", "attributions"))
    assert check_parity(reasons, path, x) < 1e-4


def test_the_served_reasons_graph_stays_finite_where_the_score_is_certain() -> None:
    import onnxruntime as ort

    from app.model_card import ModelCard

    folder = max((p for p in SERVED.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    card = ModelCard.model_validate_json((folder / "model.json").read_text())
    assert card.reasons is not None, f"{folder} has no reasons graph"
    session = ort.InferenceSession(str(folder / card.reasons.file))
    assert card.tabular is not None
    columns = card.tabular.features
    rows = np.tile(np.asarray(card.reasons.baseline, dtype=np.float32), (4, 1))
    amount = columns.index("TX_AMOUNT")
    rows[:, amount] = [5e3, 1e5, 1e7, 1e9]  # the API takes amounts up to 1e9
    explaining = {amount}
    if "CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW" in columns:  # as the history gives it
        over = columns.index("CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW")
        average = rows[:, columns.index("CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW")]
        rows[:, over] = rows[:, amount] / average
        explaining.add(over)
    (attributions,) = session.run([card.reasons.output], {card.input.name: rows})
    assert np.isfinite(attributions).all()
    assert set(attributions.argmax(axis=1).tolist()) <= explaining
