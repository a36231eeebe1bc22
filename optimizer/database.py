"""The run's SQLite database: every evaluation, committed as soon as it is done.

A genome is evaluated once per run: its hash is looked up first. Each row keeps the metrics, the
timings, the prompt/seed set and the model identity it was measured with, and where the genome
came from. A killed run loses at most the evaluation in flight.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .evaluate import Evaluation, Timings
from .genome import pack, unpack

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    genome_hash TEXT NOT NULL,
    context TEXT NOT NULL,            -- the run settings' fingerprint
    genome BLOB NOT NULL,             -- np.packbits of the genome
    n_var INTEGER NOT NULL,
    quality REAL NOT NULL,
    cost REAL NOT NULL,
    macs REAL NOT NULL,
    latency_ms REAL NOT NULL,
    scores TEXT NOT NULL,             -- JSON list, one per calibration image
    model_seconds REAL NOT NULL,
    decode_seconds REAL NOT NULL,
    metric_seconds REAL NOT NULL,
    calibration_hash TEXT NOT NULL,   -- the prompt/seed set
    model_hash TEXT NOT NULL,
    origin TEXT NOT NULL,             -- "FORA-2", "generation 3", ...
    generation INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (genome_hash, context)
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    hypervolume REAL NOT NULL,
    population TEXT NOT NULL,         -- JSON list of genome hashes
    evaluated INTEGER NOT NULL,       -- new evaluations in this generation
    reused INTEGER NOT NULL,          -- served from the database
    seconds REAL NOT NULL,
    finished REAL NOT NULL
);
"""


@dataclass
class StoredEvaluation:
    genome_hash: str
    genome: np.ndarray
    evaluation: Evaluation
    origin: str
    generation: int


class RunDatabase:
    def __init__(self, path: Path, context: str, model_hash: str, calibration_hash: str):
        self.path = Path(path)
        self.context, self.model_hash, self.calibration_hash = context, model_hash, calibration_hash
        self.db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit: each write is durable at once
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    # ------------------------------------------------------------ run metadata

    def get_meta(self, key: str) -> Optional[Any]:
        row = self.db.execute("SELECT value FROM run WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------ evaluations

    def get(self, genome_hash: str) -> Optional[StoredEvaluation]:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE genome_hash = ? AND context = ?",
                              (genome_hash, self.context)).fetchone()
        return _stored(row) if row else None

    def put(self, genome_hash: str, genome: np.ndarray, ev: Evaluation, origin: str, generation: int) -> None:
        t = ev.timings
        self.db.execute(
            "INSERT OR REPLACE INTO evaluations (genome_hash, context, genome, n_var, quality, cost, macs, latency_ms, "
            "scores, model_seconds, decode_seconds, metric_seconds, calibration_hash, model_hash, origin, generation, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (genome_hash, self.context, pack(genome), len(genome), ev.quality, ev.cost, ev.macs, ev.latency_ms,
             json.dumps([float(s) for s in ev.scores]), t.model, t.decode, t.metric, self.calibration_hash,
             self.model_hash, origin, generation, time.time()))

    def all(self) -> list[StoredEvaluation]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE context = ? ORDER BY created, genome_hash",
                               (self.context,)).fetchall()
        return [_stored(r) for r in rows]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE context = ?", (self.context,)).fetchone()[0]

    # ------------------------------------------------------------ generations

    def record_generation(self, generation: int, hypervolume: float, population: list[str], evaluated: int,
                          reused: int, seconds: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (generation, hypervolume, json.dumps(population), evaluated, reused, seconds, time.time()))

    def generations(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT generation, hypervolume, evaluated, reused, seconds FROM generations "
                               "ORDER BY generation").fetchall()
        return [dict(zip(("generation", "hypervolume", "evaluated", "reused", "seconds"), r)) for r in rows]

    def close(self) -> None:
        self.db.close()


_COLUMNS = ("genome_hash, genome, n_var, quality, cost, macs, latency_ms, scores, model_seconds, decode_seconds, "
            "metric_seconds, origin, generation")


def _stored(row) -> StoredEvaluation:
    (genome_hash, blob, n_var, quality, cost, macs, latency_ms, scores, model_s, decode_s, metric_s, origin,
     generation) = row
    ev = Evaluation(quality, cost, macs, latency_ms, np.asarray(json.loads(scores), dtype=np.float64),
                    Timings(model_s, decode_s, metric_s))
    return StoredEvaluation(genome_hash, unpack(blob, n_var), ev, origin, generation)
