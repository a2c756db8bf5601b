"""Vendor KServe's published InferenceService schema from a checkout of kserve/kserve.

    git clone --depth 1 --branch v0.20.0 https://github.com/kserve/kserve /tmp/kserve
    .venv/bin/python deploy/kserve/schema/extract.py /tmp/kserve

Writes `inferenceservice-v1beta1.json.gz` beside this file: the CRD's `openAPIV3Schema` for
v1beta1 as it is (KServe already strips descriptions from the "full" CRD), minified, with a
`$comment` naming the tag and commit it came from. gzip because the schema repeats a pod spec
per component (640 kB of JSON, 22 kB gzipped); the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

CRD = Path("config/crd/full/serving.kserve.io_inferenceservices.yaml")
VERSION = "v1beta1"
OUT = Path(__file__).with_name(f"inferenceservice-{VERSION}.json.gz")


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def schema_of(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The `openAPIV3Schema` of one version of a CustomResourceDefinition."""
    (entry,) = (v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
    return schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of github.com/kserve/kserve")
    checkout = parser.parse_args().checkout
    crd = yaml.safe_load((checkout / CRD).read_text())
    tag = _git(checkout, "describe", "--tags", "--always")
    commit = _git(checkout, "rev-parse", "HEAD")
    comment = (
        f"InferenceService {VERSION} openAPIV3Schema from github.com/kserve/kserve {tag} "
        f"(commit {commit}), {CRD}. Copyright The KServe Authors, Apache License 2.0. "
        "Extracted and minified by deploy/kserve/schema/extract.py."
    )
    text = json.dumps(
        {"$comment": comment, **schema_of(crd, VERSION)}, separators=(",", ":"), sort_keys=True
    )
    # mtime=0 and no file name in the header: the same CRD always gives the same bytes.
    OUT.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    print(f"{OUT}: {len(text)} bytes of JSON from {tag} ({commit})")


if __name__ == "__main__":
    main()
