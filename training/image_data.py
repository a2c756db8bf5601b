"""Image datasets in the ImageFolder layout (`root/<class>/*.jpg`), decoded once into memory.

Decoding goes through `app.codecs.images`, the code the service runs, so that training sees the
pixels the service will feed the model.
"""

from __future__ import annotations

import hashlib
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.codecs.images import decode_image
from app.model_card import ImagePreprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
CACHE_DIR = Path.home() / ".cache" / "deepserve"


@dataclass
class ImageSet:
    pixels: np.ndarray  # uint8 [n, height, width, 3]
    labels: np.ndarray  # int64 [n]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def resolve_root(data: str) -> Path:
    """A directory holding `train/` (and usually `test/`); a .tar.gz is extracted once."""
    path = Path(data).expanduser()
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        target = CACHE_DIR / "datasets" / path.name.split(".")[0]
        marker = target / ".extracted"
        if not marker.exists():
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(path) as archive:
                archive.extractall(target, filter="data")
            marker.touch()
        path = target
    if not path.is_dir():
        raise FileNotFoundError(f"no image dataset at {data}")
    # Accept the archive's top folder (cifar10/train) as well as train/ directly.
    if not (path / "train").is_dir():
        children = [child for child in path.iterdir() if (child / "train").is_dir()]
        if len(children) == 1:
            path = children[0]
    if not (path / "train").is_dir():
        raise FileNotFoundError(f"{path} has no train/ folder of class folders")
    return path


def read_test_jpegs(archive_path: Path, per_class: int) -> list[tuple[str, bytes]]:
    """(label, encoded bytes) of the first `per_class` test images of each class, read
    straight from an ImageFolder tarball such as the CIFAR-10 one."""
    taken: dict[str, int] = {}
    images = []
    with tarfile.open(archive_path) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] == "test":
                label = parts[-2]
                if taken.get(label, 0) < per_class:
                    taken[label] = taken.get(label, 0) + 1
                    file = archive.extractfile(member)
                    if file is not None:
                        images.append((label, file.read()))
    return images


def list_classes(split_dir: Path) -> list[str]:
    return sorted(child.name for child in split_dir.iterdir() if child.is_dir())


def load_split(
    split_dir: Path,
    prep: ImagePreprocessing,
    classes: list[str],
    per_class_limit: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """Decode every image of `classes` under `split_dir`; a limit samples per class."""
    rng = np.random.default_rng(seed)
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        paths = sorted(
            p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if per_class_limit is not None and len(paths) > per_class_limit:
            chosen = rng.choice(len(paths), per_class_limit, replace=False)
            paths = [paths[i] for i in sorted(chosen)]
        files += paths
        labels += [index] * len(paths)
    cache = _cache_path(split_dir, files, prep)
    if cache.exists():
        pixels = np.load(cache)
    else:
        pixels = _decode_all(files, prep, f"decode {split_dir.name}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, pixels)
    return ImageSet(pixels, np.asarray(labels, dtype=np.int64), list(classes))


def _decode_all(files: list[Path], prep: ImagePreprocessing, description: str) -> np.ndarray:
    def decode(path: Path) -> np.ndarray:
        return decode_image(path.read_bytes(), prep, max_pixels=1 << 31)

    out = np.empty((len(files), prep.height, prep.width, 3), dtype=np.uint8)
    with ThreadPoolExecutor() as pool:
        for i, pixels in enumerate(
            tqdm(pool.map(decode, files), total=len(files), desc=description)
        ):
            out[i] = pixels
    return out


def _cache_path(split_dir: Path, files: list[Path], prep: ImagePreprocessing) -> Path:
    digest = hashlib.sha1()
    digest.update(prep.model_dump_json().encode())
    for path in files:
        digest.update(str(path.resolve()).encode())
    return CACHE_DIR / "decoded" / f"{split_dir.name}-{digest.hexdigest()[:16]}.npy"


def to_float_nchw(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 `[n, h, w, 3]` -> normalized float `[n, 3, h, w]`."""
    x = pixels.permute(0, 3, 1, 2).float().div_(255)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def augment(
    x: torch.Tensor, pad: int, mirror: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """Random crop with reflect padding, and a horizontal flip where `mirror` is set."""
    n, c, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [n, 1, h, 1]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [n, 1, 1, w]
        x = padded[
            torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
        ]
    if mirror is not None:
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x
