"""Load transactions in bulk into the fraud history, so that a new deployment starts with
the last weeks of payments (and their labels) instead of an empty history.

    python -m app.fraud.history.bulk_load --csv transactions.csv.gz [--state-dir state]
    python -m app.fraud.history.bulk_load --csv transactions.csv.gz --store redis://host:6379

The CSV has the dataset's columns (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID,
TX_AMOUNT, and TX_FRAUD when labels are known); gzip is read as such. Only the payments
within the retention before the file's newest one are loaded; ids already in the history
are left as they are. For the embedded store, run it while the server is stopped: a
running server keeps that history in memory and would not see what was loaded. Servers
sharing a Redis see what is loaded at once.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import event_time_us
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.store import HistoryStore, LoadRow

REQUIRED = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
CHUNK = 50_000
REDIS_CHUNK = 2_000  # one script call each: short enough not to stall the servers


async def load_csv(source: Path, store: HistoryStore, report_every: int = 200_000) -> int:
    """Insert the CSV's payments within the retention into an opened store; how many."""
    header, lines = _read(source)
    columns = _Columns(header, source)
    newest = max(map(columns.time_of, lines), default=None)
    if newest is None:
        return 0
    cutoff_us = event_time_us(datetime.fromisoformat(newest)) - store.retention_us
    # ISO timestamps of one form sort as text: most old rows are skipped unparsed.
    cutoff = datetime.fromtimestamp(cutoff_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
    chunk_size = CHUNK if isinstance(store, EmbeddedHistory) else REDIS_CHUNK
    loaded, reported, started = 0, 0, time.perf_counter()
    chunk: list[LoadRow] = []
    for line in lines:
        if columns.time_of(line) < cutoff:
            continue
        row = columns.values(line)
        time_us = event_time_us(datetime.fromisoformat(row[1]))
        if time_us < cutoff_us:
            continue
        chunk.append((_id(row[0]), _id(row[2]), _id(row[3]), float(row[4]), time_us, row[5]))
        if len(chunk) == chunk_size:
            loaded += await store.load(chunk)
            chunk = []
            if loaded - reported >= report_every:
                reported = loaded
                rate = loaded / (time.perf_counter() - started)
                print(f"  {loaded:,} payments ({rate:,.0f}/s)", file=sys.stderr)
    return loaded + await store.load(chunk)


class _Columns:
    """Where the needed columns sit in a line; lines with quotes go through `csv`."""

    def __init__(self, header: list[str], source: Path) -> None:
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise SystemExit(f"{source}: no column {', '.join(missing)}")
        self.where = [header.index(c) for c in REQUIRED]
        self.time_column = header.index("TX_DATETIME")
        self.fraud = header.index("TX_FRAUD") if "TX_FRAUD" in header else None

    def _fields(self, line: str) -> list[str]:
        if '"' in line:
            return next(csv.reader([line]))
        return line.split(",")

    def time_of(self, line: str) -> str:
        if '"' in line:
            return self._fields(line)[self.time_column]
        return line.split(",", self.time_column + 1)[self.time_column]

    def values(self, line: str) -> tuple[str, str, str, str, str, int | None]:
        fields = self._fields(line)
        label = None if self.fraud is None or fields[self.fraud] == "" else int(fields[self.fraud])
        a, b, c, d, e = (fields[i] for i in self.where)
        return a, b, c, d, e, label


def _read(source: Path) -> tuple[list[str], list[str]]:
    """The header's columns and the other lines. Read once into memory (some 150 MB for
    the 1.75M-row dataset): the loader goes over them twice."""
    raw = source.read_bytes()
    if source.suffix == ".gz":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").splitlines()
    if not lines:
        return [], []
    return next(csv.reader(lines[:1])), lines[1:]


def _id(text: str) -> str:
    """The stored (JSON) form of an id: integers as numbers, anything else as a string."""
    digits = text.removeprefix("-")
    return text if digits.isascii() and digits.isdigit() else orjson.dumps(text).decode()


def main(argv: list[str] | None = None) -> int:
    """Load as the command line says; how many payments were loaded."""
    parser = argparse.ArgumentParser(
        prog="python -m app.fraud.history.bulk_load", description=__doc__
    )
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=Path("state"))
    parser.add_argument(
        "--store", default="", help="a redis:// URL; the embedded store when not given"
    )
    parser.add_argument("--retention-days", type=int, default=37)
    args = parser.parse_args(argv)
    store: HistoryStore
    if args.store:
        store = RedisHistory(args.store, args.retention_days)
    else:
        store = EmbeddedHistory(args.state_dir / "fraud-history.db", args.retention_days)
    started = time.perf_counter()
    loaded = asyncio.run(_load(args.csv, store))
    seconds = time.perf_counter() - started
    print(
        f"loaded {loaded:,} payments into {store.where} in {seconds:.1f} s "
        f"({loaded / max(seconds, 1e-9):,.0f}/s)"
    )
    return loaded


async def _load(source: Path, store: HistoryStore) -> int:
    await store.open()
    try:
        return await load_csv(source, store)
    finally:
        await store.close()


if __name__ == "__main__":
    main()
