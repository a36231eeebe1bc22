"""The run's SQLite database: every evaluation, committed as soon as it is done.

A genome is evaluated once per run and fidelity: its hash is looked up first. Each row keeps the
metrics, the timings, the prompt/seed set and the model identity it was measured with, where the
genome came from, which calibration images it was scored on (all of them: ``full``; racing screens
candidates on a few first) and how many images it rendered. A killed run loses at most the
evaluation in flight. The uncached reference images are kept too (table ``references``), so a
resumed run neither renders them again nor counts them twice against ``--budget-images``.

The database and the search checkpoint are one unit (``optimizer/run_dir.py``): each row carries
its insertion number and a checksum of its contents, and each checkpoint records how many rows the
database held and a digest of their checksums. Opening a database runs SQLite's integrity check
and every row's checksum; anything wrong is a ``DamagedRun`` naming the file. Before a checkpoint is
written, the write-ahead log is copied into the database file (``sync``), so losing the ``-wal``
file after a kill loses only evaluations the resumed run repeats.
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .evaluate import Evaluation, References, Timings
from .genome import pack, unpack

SCHEMA_VERSION = 4
SQLITE_HEADER = b"SQLite format 3\x00"

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
    seq INTEGER NOT NULL UNIQUE,      -- insertion order: 1, 2, 3, ...
    full INTEGER NOT NULL,            -- 1: scored on every calibration image; 0: on `items` only (a racing screen)
    items TEXT NOT NULL,              -- JSON list of the calibration images scored; [] = all (one row per stage)
    images INTEGER NOT NULL,          -- images rendered for this row (a full row after a screen: the rest)
    checksum TEXT NOT NULL,           -- sha256 of every other column (row_checksum)
    PRIMARY KEY (genome_hash, context, items)
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    hypervolume REAL NOT NULL,
    population TEXT NOT NULL,         -- JSON list of genome hashes
    evaluated INTEGER NOT NULL,       -- new evaluations in this generation
    reused INTEGER NOT NULL,          -- served from the database
    seconds REAL NOT NULL,
    finished REAL NOT NULL,
    images INTEGER NOT NULL,          -- images the run had rendered when the generation ended
    complete INTEGER NOT NULL,        -- 0: the image budget ended it early
    details TEXT NOT NULL             -- JSON: screened, promoted, surrogate state, ...
);
CREATE TABLE IF NOT EXISTS reference_images (
    item INTEGER PRIMARY KEY,         -- calibration image index
    image BLOB NOT NULL,              -- PNG of the uncached image
    score REAL NOT NULL,              -- its metric score
    checksum TEXT NOT NULL            -- sha256 of the other columns
);
"""
_ROW = ("genome_hash, context, genome, n_var, quality, cost, macs, latency_ms, scores, model_seconds, decode_seconds, "
        "metric_seconds, calibration_hash, model_hash, origin, generation, created, seq, full, items, images")
_ROW_COUNT = len(_ROW.split(","))


class DamagedRun(RuntimeError):
    """A file of the run directory that cannot be used as it is; ``str()`` is ``"<file>: <problem>"``."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def row_checksum(row: tuple) -> str:
    """sha256 over one evaluation row (the columns of ``_ROW``, in order), exact for every stored value."""
    def canonical(value: Any) -> Any:
        if isinstance(value, bytes):
            return ["blob", value.hex()]
        if isinstance(value, float):
            return ["real", value.hex()]
        return value
    return hashlib.sha256(json.dumps([canonical(v) for v in row], separators=(",", ":")).encode()).hexdigest()


@dataclass
class StoredEvaluation:
    genome_hash: str
    genome: np.ndarray
    evaluation: Evaluation
    origin: str
    generation: int
    seq: int = 0
    full: bool = True


def _items_column(items: Sequence[int]) -> str:
    """The ``items`` column of an evaluation on these calibration images: what ``put`` writes and ``get`` looks up."""
    return json.dumps([int(i) for i in items])


class RunDatabase:
    def __init__(self, path: Path, context: str, model_hash: str, calibration_hash: str):
        """Open (or create) the database and check it: SQLite's integrity check, the schema, every row's checksum."""
        self.path = Path(path)
        self.context, self.model_hash, self.calibration_hash = context, model_hash, calibration_hash
        self._check_header()
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit: each write durable at once
        except sqlite3.Error as e:
            raise DamagedRun(self.path, f"cannot be opened ({e})") from None
        try:
            with self._sqlite("opening it"):
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                problems = [r[0] for r in self.db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise DamagedRun(self.path, f"is damaged (SQLite's check: {'; '.join(problems)})")
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    self.db.executescript(_SCHEMA)
                    self.set_meta("schema_version", SCHEMA_VERSION)
                self._check_schema()
                self._check_rows()
                self._next_seq = 1 + self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM evaluations").fetchone()[0]
        except BaseException:
            self.db.close()
            raise

    # ------------------------------------------------------------ checks

    def _check_header(self) -> None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            return  # a new database
        except OSError as e:
            raise DamagedRun(self.path, f"cannot be read ({e.strerror or type(e).__name__})") from None
        if head and head != SQLITE_HEADER[:len(head)] or 0 < len(head) < len(SQLITE_HEADER):
            raise DamagedRun(self.path, "is not an SQLite database (its header is damaged or it is another file)")

    def _check_schema(self) -> None:
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(evaluations)")}
        version = self.get_meta("schema_version")
        if version != SCHEMA_VERSION or not {"seq", "checksum", "full", "images"} <= columns:
            raise DamagedRun(self.path, f"was written by another version of the optimizer (database schema "
                                        f"{version or 1}; this version writes {SCHEMA_VERSION}); start a new run in "
                                        "another --run-dir")

    def _check_rows(self) -> None:
        bad = total = 0
        for row in self.db.execute(f"SELECT {_ROW}, checksum FROM evaluations"):
            total += 1
            bad += row_checksum(row[:-1]) != row[-1]
        if bad:
            raise DamagedRun(self.path, f"{bad} of its {total} evaluations do not match their checksums: the file was "
                                        "changed or damaged")
        bad = total = 0
        for row in self.db.execute('SELECT item, image, score, checksum FROM reference_images'):
            total += 1
            bad += row_checksum(row[:-1]) != row[-1]
        if bad:
            raise DamagedRun(self.path, f"{bad} of its {total} reference images do not match their checksums: the "
                                        "file was changed or damaged")

    @contextmanager
    def _sqlite(self, doing: str) -> Iterator[None]:
        """SQLite errors as DamagedRun naming the file (a full disk, a read-only folder, a malformed page, ...)."""
        try:
            yield
        except sqlite3.Error as e:
            raise DamagedRun(self.path, f"SQLite error while {doing}: {e}") from None

    # ------------------------------------------------------------ what a checkpoint records

    def state(self) -> dict[str, Any]:
        """What the database holds now: the number of evaluations, the last insertion number and a digest, and
        the same of its reference images."""
        with self._sqlite("reading its evaluations"):
            rows = self.db.execute("SELECT seq, checksum FROM evaluations ORDER BY seq").fetchall()
            references = self.db.execute('SELECT checksum FROM reference_images ORDER BY item').fetchall()
        return {"evaluations": len(rows), "last_seq": rows[-1][0] if rows else 0,
                "digest": hashlib.sha256("".join(c for _, c in rows).encode()).hexdigest(),
                "references": len(references),
                "references_digest": hashlib.sha256("".join(c for c, in references).encode()).hexdigest()}

    def holds(self, state: dict[str, Any]) -> Optional[str]:
        """Why the database does not hold what ``state`` recorded (None if it does; later rows may follow)."""
        with self._sqlite("reading its evaluations"):
            rows = self.db.execute("SELECT checksum FROM evaluations WHERE seq <= ? ORDER BY seq",
                                   (int(state["last_seq"]),)).fetchall()
            references = self.db.execute('SELECT checksum FROM reference_images ORDER BY item').fetchall()
        if len(rows) != state["evaluations"]:
            return (f"holds {len(rows)} of the {state['evaluations']} evaluations the checkpoint records (emptied, "
                    "truncated, replaced, or its -wal file lost before the checkpoint was written)")
        if hashlib.sha256("".join(r[0] for r in rows).encode()).hexdigest() != state["digest"]:
            return "holds other evaluations than the checkpoint records (changed or replaced)"
        if len(references) != state["references"]:
            return (f"holds {len(references)} reference images, not the {state['references']} the checkpoint records "
                    "(emptied, truncated or replaced)")
        if hashlib.sha256("".join(c for c, in references).encode()).hexdigest() != state["references_digest"]:
            return "holds other reference images than the checkpoint records (changed or replaced)"
        return None

    def sync(self) -> None:
        """Copy the write-ahead log into the database file (and sync it), so the file alone holds every evaluation."""
        with self._sqlite("writing its log into the database file"):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # ------------------------------------------------------------ run metadata

    def get_meta(self, key: str) -> Optional[Any]:
        with self._sqlite("reading the run's settings"):
            row = self.db.execute("SELECT value FROM run WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            raise DamagedRun(self.path, f"the run entry '{key}' is not JSON (the file was changed or damaged)") from None

    def set_meta(self, key: str, value: Any) -> None:
        with self._sqlite("writing the run's settings"):
            self.db.execute("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------ evaluations

    def get(self, genome_hash: str, items: Sequence[int] = ()) -> Optional[StoredEvaluation]:
        """The genome's evaluation on every calibration image, or (``items``) its racing screen on those images."""
        with self._sqlite("reading an evaluation"):
            row = self.db.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE genome_hash = ? AND context = ? "
                                  "AND items = ?", (genome_hash, self.context, _items_column(items))).fetchone()
        return _stored(row) if row else None

    def put(self, genome_hash: str, genome: np.ndarray, ev: Evaluation, origin: str, generation: int) -> StoredEvaluation:
        t = ev.timings
        row = (genome_hash, self.context, pack(genome), int(len(genome)), float(ev.quality), float(ev.cost),
               float(ev.macs), float(ev.latency_ms), json.dumps([float(s) for s in ev.scores]), float(t.model),
               float(t.decode), float(t.metric), self.calibration_hash, self.model_hash, origin, int(generation),
               time.time(), self._next_seq, int(not ev.items), _items_column(ev.items), int(ev.images))
        if not all(math.isfinite(v) for v in row[4:8]):  # SQLite would store NaN as NULL
            raise ValueError(f"the evaluation of genome {genome_hash[:12]} is not finite (quality {ev.quality}, cost "
                             f"{ev.cost}): the model or the metric produced NaN or infinity")
        with self._sqlite("storing an evaluation"):
            self.db.execute(f"INSERT INTO evaluations ({_ROW}, checksum) VALUES ({', '.join('?' * (_ROW_COUNT + 1))})",
                            (*row, row_checksum(row)))
        self._next_seq += 1
        return StoredEvaluation(genome_hash, np.asarray(genome, dtype=bool), ev, origin, generation, row[17], not ev.items)

    def all(self) -> list[StoredEvaluation]:
        """Every evaluation on all calibration images, in insertion order: what frontiers are made of."""
        with self._sqlite("reading its evaluations"):
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE context = ? AND full = 1 ORDER BY seq",
                                   (self.context,)).fetchall()
        return [_stored(r) for r in rows]

    def rows(self, up_to_seq: Optional[int] = None) -> list[StoredEvaluation]:
        """Every evaluation, screens included, in insertion order (up to insertion number ``up_to_seq``)."""
        limit = (1 << 62) if up_to_seq is None else int(up_to_seq)
        with self._sqlite("reading its evaluations"):
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE context = ? AND seq <= ? ORDER BY seq",
                                   (self.context, limit)).fetchall()
        return [_stored(r) for r in rows]

    def count(self) -> int:
        """Evaluations on all calibration images."""
        with self._sqlite("counting its evaluations"):
            return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE context = ? AND full = 1",
                                   (self.context,)).fetchone()[0]

    def images(self) -> int:
        """Every image the run rendered and kept: its references, every evaluation at every fidelity, and what the
        runs' final measurements (latency, held-out check) rendered."""
        with self._sqlite("counting its images"):
            evaluated = self.db.execute("SELECT COALESCE(SUM(images), 0) FROM evaluations").fetchone()[0]
            references = self.db.execute('SELECT COUNT(*) FROM reference_images').fetchone()[0]
        return int(evaluated) + int(references) + int(self.get_meta("measured_images") or 0)

    def add_measured_images(self, count: int) -> None:
        self.set_meta("measured_images", int(self.get_meta("measured_images") or 0) + int(count))

    # ------------------------------------------------------------ the uncached references

    def put_references(self, references: References) -> None:
        """The reference images and what was measured on them, in one transaction."""
        import io
        rows = []
        for i, (image, score) in enumerate(zip(references.images, references.scores)):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            row = (i, buffer.getvalue(), float(score))
            rows.append((*row, row_checksum(row)))
        t = references.timings
        summary = {"latency_ms": references.latency_ms, "timings": [t.model, t.decode, t.metric],
                   "image_cost": references.image_cost.to_json()}
        summary["checksum"] = row_checksum((json.dumps(summary, sort_keys=True),))
        with self._sqlite("storing the reference images"):
            self.db.execute("BEGIN")
            try:
                self.db.executemany('INSERT INTO reference_images VALUES (?, ?, ?, ?)', rows)
                self.db.execute("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)",
                                ("references", json.dumps(summary)))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def references(self, layout) -> Optional[References]:
        """The stored references (None if there are none yet); ``layout``: the model's, for the cost model."""
        import io

        from PIL import Image

        from .backend import ImageCost
        summary = self.get_meta("references")
        with self._sqlite("reading the reference images"):
            rows = self.db.execute('SELECT image, score FROM reference_images ORDER BY item').fetchall()
        if summary is None and not rows:
            return None
        if summary is None or not rows:
            raise DamagedRun(self.path, "holds reference images without their measurements, or the other way round "
                                        "(changed or damaged)")
        checksum = summary.pop("checksum", None)
        if checksum != row_checksum((json.dumps(summary, sort_keys=True),)):
            raise DamagedRun(self.path, "the measurements of its reference images do not match their checksum")
        images = []
        for blob, _ in rows:
            with Image.open(io.BytesIO(blob)) as image:
                images.append(image.convert("RGB"))
        return References(images, np.array([s for _, s in rows], dtype=np.float64), summary["latency_ms"],
                          ImageCost.from_json(layout, summary["image_cost"]), Timings(*summary["timings"]))

    # ------------------------------------------------------------ generations

    def record_generation(self, generation: int, hypervolume: float, population: list[str], evaluated: int,
                          reused: int, seconds: float, images: int = 0, complete: bool = True,
                          details: Optional[dict[str, Any]] = None) -> None:
        with self._sqlite("recording a generation"):
            self.db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (generation, hypervolume, json.dumps(population), evaluated, reused, seconds, time.time(),
                             int(images), int(complete), json.dumps(details or {})))

    def amend_generation(self, generation: int, hypervolume: float, images: int, details: dict[str, Any]) -> None:
        """A recorded generation's hypervolume and images, and ``details`` merged into its own, after more was
        rendered for it (``Search.verify``); nothing if it is not recorded."""
        with self._sqlite("amending a generation"):
            row = self.db.execute("SELECT details FROM generations WHERE generation = ?", (generation,)).fetchone()
            if row is not None:
                self.db.execute("UPDATE generations SET hypervolume = ?, images = ?, details = ? WHERE generation = ?",
                                (hypervolume, int(images), json.dumps({**json.loads(row[0]), **details}), generation))

    def generations(self) -> list[dict[str, Any]]:
        with self._sqlite("reading the generations"):
            rows = self.db.execute("SELECT generation, hypervolume, evaluated, reused, seconds, images, complete, "
                                   "details FROM generations ORDER BY generation").fetchall()
        keys = ("generation", "hypervolume", "evaluated", "reused", "seconds", "images", "complete")
        return [{**dict(zip(keys, r[:-1])), "complete": bool(r[6]), **json.loads(r[7])} for r in rows]

    def close(self) -> None:
        self.db.close()


_COLUMNS = ("genome_hash, genome, n_var, quality, cost, macs, latency_ms, scores, model_seconds, decode_seconds, "
            "metric_seconds, origin, generation, seq, full, items, images")


def _stored(row) -> StoredEvaluation:
    (genome_hash, blob, n_var, quality, cost, macs, latency_ms, scores, model_s, decode_s, metric_s, origin,
     generation, seq, full, items, images) = row
    ev = Evaluation(quality, cost, macs, latency_ms, np.asarray(json.loads(scores), dtype=np.float64),
                    Timings(model_s, decode_s, metric_s), tuple(json.loads(items)), images)
    return StoredEvaluation(genome_hash, unpack(blob, n_var), ev, origin, generation, seq, bool(full))
