"""EfficientNet-Lite0 as a transfer backbone: the published weights load exactly, the network
is the one they were trained in, frozen runs compute features once, and photo-sized inputs go
from an image folder to a served model."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from app.codecs.images import decode_image
from app.model_card import ImagePreprocessing, ModelCard, Normalization
from training import efficientnet_lite
from training.cnn import ServingImageModel
from training.efficientnet_lite import EfficientNetLite0, LiteBackbone
from training.frozen_features import compute_features, evaluate_features
from training.image_data import ImageSet
from training.images import TransferConfig, evaluate, train_images

# ImageNet class indices: the classic answers for the Grace Hopper portrait.
MILITARY_UNIFORM = 652
HOPPER_CLASSES = {400, 457, 652, 667, 834, 906}  # gown, bow tie, uniform, mortarboard, suit, tie


@pytest.fixture(scope="module")
def imagenet_model() -> EfficientNetLite0:
    return efficientnet_lite.pretrained().eval()


def test_the_published_weights_load_with_no_missing_or_unexpected_key() -> None:
    published = efficientnet_lite.published_state_dict()
    backbone = LiteBackbone()
    result = backbone.load_state_dict(
        {k: v for k, v in published.items() if not k.startswith("_fc.")}, strict=True
    )
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert {k for k in published if k.startswith("_fc.")} == {"_fc.weight", "_fc.bias"}
    model = EfficientNetLite0()
    model.load_state_dict(efficientnet_lite.imagenet_state_dict(), strict=True)
    assert torch.equal(model.head.weight, published["_fc.weight"])
    # EfficientNet-Lite0 as published: 4.65M parameters, 1000 ImageNet classes.
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_a_new_head_starts_from_even_odds_on_the_imagenet_backbone() -> None:
    model = efficientnet_lite.pretrained(num_classes=3).eval()
    published = efficientnet_lite.published_state_dict()
    assert torch.equal(model.backbone._conv_stem.weight, published["_conv_stem.weight"])
    with torch.no_grad():
        probabilities = model(torch.randn(2, 3, 64, 64)).softmax(1)
    assert torch.allclose(probabilities, torch.full((2, 3), 1 / 3))


def test_strided_convolutions_pad_as_tensorflow_same_does() -> None:
    """Output ceil(input / 2); on an even input the extra row and column of zeros go after, so
    the first output sees input rows and columns 0..2 (symmetric padding would see -1..1)."""
    conv = efficientnet_lite._conv(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = conv(x)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] == x[0, 0, :3, :3].sum()
    assert out[0, 0, 1, 1] == x[0, 0, 2:, 2:].sum()  # the padding past the edge adds zeros
    assert conv(torch.ones(1, 1, 5, 7)).shape == (1, 1, 3, 4)


def test_it_is_the_network_the_weights_were_trained_in(imagenet_model) -> None:
    """A photo it has never seen (matplotlib's portrait of Grace Hopper, in uniform), prepared
    as for ImageNet (shorter side to 256, center 224, (p - 127) / 128): the top five are the
    classic answers for this photo, the uniform among them. A wrong padding convention or
    normalization shuffles them."""
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    prep = ImagePreprocessing(
        height=224,
        width=224,
        resize="shorter_side_then_center_crop",
        resize_shorter_to=256,
        layout="NHWC",
        normalization=Normalization(
            mean=efficientnet_lite.MEAN, std=efficientnet_lite.STD, in_graph=True
        ),
    )
    pixels = decode_image(photo.read_bytes(), prep, max_pixels=1 << 24)
    serving = ServingImageModel(imagenet_model, efficientnet_lite.MEAN, efficientnet_lite.STD)
    with torch.no_grad():
        probabilities = serving(torch.from_numpy(pixels.copy())[None])[0]
    top5 = set(probabilities.topk(5).indices.tolist())
    assert MILITARY_UNIFORM in top5
    assert len(top5 & HOPPER_CLASSES) >= 4
    # The documented preprocessing: pixel 127 is zero, 255 is one.
    assert torch.allclose(
        (torch.tensor([127.0, 255.0]) - serving.mean[0, 0, 0, 0]) / serving.std[0, 0, 0, 0],
        torch.tensor([0.0, 1.0]),
    )


def test_cached_features_score_as_the_whole_network_does(imagenet_model) -> None:
    generator = np.random.default_rng(0)
    data = ImageSet(
        generator.integers(0, 256, size=(10, 64, 64, 3), dtype=np.uint8),
        np.array([0, 1] * 5),
        ["a", "b"],
    )
    model = efficientnet_lite.pretrained(num_classes=2).eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)
    mean, std = torch.tensor(efficientnet_lite.MEAN), torch.tensor(efficientnet_lite.STD)
    features = compute_features(model.backbone, data, mean, std, torch.device("cpu"), "test")
    assert features.shape == (10, 2, efficientnet_lite.FEATURES)
    for tta in ("none", "flip"):
        from_features = evaluate_features(model, features, data.labels, tta)
        from_pixels = evaluate(model, data, mean, std, torch.device("cpu"), tta)
        assert from_features[0] == pytest.approx(from_pixels[0], rel=1e-4)
        assert np.array_equal(from_features[2], from_pixels[2])


def _photos(root: Path, per_class: int, seed: int = 0) -> None:
    """Photo-sized images of two kinds, at their own sizes: discs and stripes."""
    generator = np.random.default_rng(seed)
    for split in ("train", "test"):
        for kind in ("discs", "stripes"):
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(per_class):
                width, height = int(generator.integers(300, 480)), int(generator.integers(240, 360))
                image = Image.new("RGB", (width, height), tuple(generator.integers(0, 256, 3)))
                draw = ImageDraw.Draw(image)
                colour = tuple(int(c) for c in generator.integers(0, 256, 3))
                for _ in range(6):
                    x, y = generator.integers(0, width), generator.integers(0, height)
                    if kind == "discs":
                        draw.ellipse((x - 30, y - 30, x + 30, y + 30), fill=colour)
                    else:
                        draw.rectangle((x, 0, x + 12, height), fill=colour)
                image.save(folder / f"{i}.jpg", quality=90)


def test_photo_sized_images_train_export_and_serve(
    tmp_path: Path, make_client, monkeypatch
) -> None:
    """The README's photo example in small: an image folder of photos at their own sizes,
    resized and center-cropped to 224 as the card records, a few steps, served."""
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    _photos(tmp_path / "photos", per_class=6)
    target = train_images(
        TransferConfig(
            data=str(tmp_path / "photos"),
            backbone="efficientnet-lite0",
            mode="finetune",
            name="shapes",
            resize_shorter_to=256,
            epochs=1,
            batch_size=6,
            models_dir=str(tmp_path / "models"),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert target is not None
    card = ModelCard.model_validate_json((target / "model.json").read_text())
    assert card.image is not None
    assert (card.image.height, card.image.width, card.image.resize_shorter_to) == (224, 224, 256)
    assert card.image.resize == "shorter_side_then_center_crop"
    assert tuple(card.image.normalization.mean) == efficientnet_lite.MEAN
    assert card.labels == ["discs", "stripes"]
    assert card.metrics["backbone"] == "efficientnet-lite0"
    assert card.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    client = make_client(repo=tmp_path / "models", default_image_model="shapes")
    photo = next((tmp_path / "photos" / "test" / "stripes").iterdir())
    with Image.open(photo) as image:
        assert image.size != (224, 224)
    response = client.post(
        "/v1/classify", content=photo.read_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["results"][0]["predictions"]
    assert {p["label"] for p in predictions} == {"discs", "stripes"}


def test_frozen_runs_compute_each_images_features_once(tmp_path: Path, monkeypatch) -> None:
    """The backbone sees each training image and its mirror once, however many epochs the head
    trains; the features stay in the run directory."""
    monkeypatch.setattr("training.image_data.CACHE_DIR", tmp_path / "cache")
    _photos(tmp_path / "photos", per_class=4)
    seen: list[int] = []
    forward = LiteBackbone.forward

    def counting(self, x):
        seen.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(LiteBackbone, "forward", counting)
    rows = {}
    for epochs in (1, 5):
        seen.clear()
        train_images(
            TransferConfig(
                data=str(tmp_path / "photos"),
                backbone="efficientnet-lite0",
                mode="frozen",
                name=f"frozen-{epochs}",
                image_size=96,  # above SMALL_INPUT: the test set is scored with tta none only
                resize_shorter_to=104,
                epochs=epochs,
                batch_size=4,
                tta="none",
                runs_dir=str(tmp_path / f"runs-{epochs}"),
                export=False,
            )
        )
        rows[epochs] = sum(seen)
        run = next((tmp_path / f"runs-{epochs}").iterdir())
        cached = torch.load(run / "features-train.pt", weights_only=True)
        assert cached.shape == (8, 2, efficientnet_lite.FEATURES)
    # 8 training images and their mirrors, then the 8 test images once each (tta none).
    assert rows == {1: 8 * 2 + 8, 5: 8 * 2 + 8}
