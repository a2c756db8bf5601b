"""Run directories: one per run, named by its start time, never shared.

Two runs started in the same second (two evaluations launched side by side, say) would
otherwise write their configs, metrics and plots into one directory.
"""

from __future__ import annotations

import time
from pathlib import Path


def new_run_dir(runs_dir: str | Path, stem: str) -> Path:
    """Create and return `<runs_dir>/<stem>-<YYYYmmdd-HHMMSS>`, with `-2`, `-3`, ... added
    when that name is taken."""
    base = Path(runs_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = base, 1
    while True:
        try:
            candidate.mkdir()  # atomic: of two runs racing for a name, one gets it
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = base.with_name(f"{base.name}-{suffix}")
