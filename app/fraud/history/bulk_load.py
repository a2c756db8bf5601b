"""Load transactions in bulk into the embedded fraud history, so that a new deployment starts
with the last weeks of payments (and their labels) instead of an empty history.

    python -m app.fraud.history.bulk_load --csv transactions.csv.gz [--state-dir state]

The CSV has the dataset's columns (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID,
TX_AMOUNT, and TX_FRAUD when labels are known); gzip is read as such. Only the payments
within the retention before the file's newest one are loaded; ids already in the history
are left as they are. Run it while the server is stopped: a running server keeps its
history in memory and would not see what was loaded.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import event_time_us

REQUIRED = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
CHUNK = 50_000


def load_csv(source: Path, store: EmbeddedHistory, report_every: int = 200_000) -> int:
    """Insert the CSV's payments within the retention into an opened store; how many."""
    header, lines = _read(source)
    columns = _Columns(header, source)
    newest = max(map(columns.time_of, lines), default=None)
    if newest is None:
        return 0
    cutoff_us = event_time_us(datetime.fromisoformat(newest)) - store.retention_us
    # ISO timestamps of one form sort as text: most old rows are skipped unparsed.
    cutoff = datetime.fromtimestamp(cutoff_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
    db = store.connection()
    loaded, chunk, started = 0, [], time.perf_counter()
    db.execute("BEGIN")
    try:
        for line in lines:
            if columns.time_of(line) < cutoff:
                continue
            row = columns.values(line)
            time_us = event_time_us(datetime.fromisoformat(row[1]))
            if time_us < cutoff_us:
                continue
            chunk.append((_id(row[0]), _id(row[2]), _id(row[3]), float(row[4]), time_us, row[5]))
            if len(chunk) == CHUNK:
                loaded += _insert(db, chunk)
                chunk = []
                if loaded % report_every < CHUNK:
                    rate = loaded / (time.perf_counter() - started)
                    print(f"  {loaded:,} payments ({rate:,.0f}/s)", file=sys.stderr)
        loaded += _insert(db, chunk)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return loaded


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
    stripped = text.lstrip("-")
    return text if stripped.isascii() and stripped.isdigit() else f'"{text}"'


def _insert(db: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> int:
    before = db.total_changes
    db.executemany(
        "INSERT OR IGNORE INTO payments "
        "(transaction_id, customer_id, terminal_id, amount, time_us, fraud) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    return db.total_changes - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.fraud.history.bulk_load", description=__doc__
    )
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=Path("state"))
    parser.add_argument("--retention-days", type=int, default=37)
    args = parser.parse_args(argv)
    store = EmbeddedHistory(args.state_dir / "fraud-history.db", args.retention_days)
    store.open()
    started = time.perf_counter()
    loaded = load_csv(args.csv, store)
    seconds = time.perf_counter() - started
    store.close()
    print(
        f"loaded {loaded:,} payments into {store.path} in {seconds:.1f} s "
        f"({loaded / max(seconds, 1e-9):,.0f}/s)"
    )


if __name__ == "__main__":
    main()
