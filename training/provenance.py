"""What a model card records about how its model was made."""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from app.model_card import Provenance

_LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "pandas", "scikit-learn")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def current_provenance(data: str, seed: int, notes: str | None = None) -> Provenance:
    """The provenance of a run started by this process's command line."""
    command = "python -m training " + shlex.join(sys.argv[1:])
    return Provenance(
        command=command,
        data=data,
        seed=seed,
        created_at=datetime.now(UTC),
        library_versions=library_versions(),
        git_commit=git_commit(),
        notes=notes,
    )
