"""The run directory as one consistent unit: ``run.sqlite`` (every evaluation) and ``checkpoint.pkl`` (the search state
after the last finished generation), each checked against the other before a run continues.

- The checkpoint records what the database held when it was written: the number of evaluations, the last row's
  insertion number and a digest of the rows' checksums. It is stored with a digest of its own bytes.
- Before a checkpoint is written, the database's write-ahead log is copied into ``run.sqlite``
  (``RunDatabase.sync``): a lost or garbled ``run.sqlite-wal`` loses only evaluations made after the
  checkpoint, and a resumed run repeats exactly those (the same candidates, in the same order).
- On ``--resume``: SQLite's integrity check, every row's checksum, the checkpoint's digest, and that the
  database holds every evaluation the checkpoint records, unchanged. Any disagreement is a ``DamagedRun``
  (``error: <file>: <problem>``, exit 2) and nothing is written to the damaged files. The one repair the data
  allows is documented in each message: without ``checkpoint.pkl`` the search is replayed from its first generation,
  finding every stored evaluation in the database, which gives the uninterrupted run's frontier.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Optional

from .database import DamagedRun, RunDatabase

DATABASE_NAME = "run.sqlite"
CHECKPOINT_NAME = "checkpoint.pkl"
CHECKPOINT_FORMAT = 3
_MAGIC = b"ECAD optimizer checkpoint %d\n" % CHECKPOINT_FORMAT
_DIGEST_BYTES = 64  # sha256, hex
SIDE_FILES = ("run.sqlite-wal", "run.sqlite-shm")  # SQLite's write-ahead log and its index


# ---------------------------------------------------------------- the checkpoint file

def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    data = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path) -> Optional[dict[str, Any]]:
    """The checkpoint's state, its digest checked; None when there is none."""
    replay = (f"delete it to replay the search from its first generation: the evaluations in {DATABASE_NAME} are "
              "reused, so the run ends with the same frontier")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DamagedRun(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    if not data.startswith(_MAGIC):
        raise DamagedRun(path, f"cannot be read: it is not a checkpoint of this optimizer version (or its header is "
                               f"damaged); {replay}")
    digest, payload = data[len(_MAGIC):len(_MAGIC) + _DIGEST_BYTES], data[len(_MAGIC) + _DIGEST_BYTES + 1:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise DamagedRun(path, f"cannot be read: it is damaged (its checksum does not match its contents); {replay}")
    try:
        state = pickle.loads(payload)
    except Exception as e:  # written by this version and checksummed: only another version's classes fail here
        raise DamagedRun(path, f"cannot be read ({type(e).__name__}: {e}); {replay}") from None
    if not (isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT
            and isinstance(state.get("completed"), int) and isinstance(state.get("database"), dict)):
        raise DamagedRun(path, f"cannot be read: not a checkpoint of this optimizer version; {replay}")
    return state


# ---------------------------------------------------------------- before any work (plan_run)

def setup_problems(run_dir: Path, resume: bool, resumable: bool = True) -> list[str]:
    """What stops a run in ``run_dir`` from starting or resuming, found before anything is loaded or written;
    ``resumable``: whether the command has ``--resume`` (quick calibration has not)."""
    database, checkpoint = run_dir / DATABASE_NAME, run_dir / CHECKPOINT_NAME
    has_run = database.is_file()
    problems = []
    if resume and not has_run:
        if checkpoint.is_file():
            problems.append(f"--resume: {database} is missing, but {checkpoint} is there: the checkpoint alone cannot "
                            f"give the run's frontier; restore {DATABASE_NAME}, or delete {run_dir} to start over")
        else:
            problems.append(f"--resume: {run_dir} holds no run to resume (no {DATABASE_NAME}); start one without "
                            "--resume")
    elif has_run and not resume:
        problems.append(f"{run_dir} already holds a run: " + ("continue it with --resume, or " if resumable else "")
                        + f"choose another --run-dir (or delete {database} and {checkpoint} to start over)")
    elif not resume:
        left = [p.name for p in (checkpoint, *(run_dir / n for n in SIDE_FILES)) if p.exists()]
        if left:
            problems.append(f"{run_dir} holds {', '.join(left)} from an earlier run but no {DATABASE_NAME}: a new run "
                            "there would read them as its own; delete them (or choose another --run-dir)")
    if resume and has_run and not os.access(run_dir, os.W_OK | os.X_OK):
        problems.append(f"--run-dir {run_dir} is not writable: resuming writes {DATABASE_NAME}'s log "
                        f"({SIDE_FILES[0]}) and a new {CHECKPOINT_NAME} there")
    return problems


# ---------------------------------------------------------------- opening and checking (run)

def open_run(run_dir: Path, fingerprint: str, model_hash: str, calibration_hash: str) -> tuple[RunDatabase, Optional[dict]]:
    """The run's database, checked (integrity, schema, row checksums), and the checkpoint's state (digest checked).

    An empty database is filled with the schema only when there is no checkpoint: with one, it lost the run.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DamagedRun(run_dir, f"cannot be created ({e.strerror or type(e).__name__})") from None
    checkpoint = read_checkpoint(run_dir / CHECKPOINT_NAME)
    path = run_dir / DATABASE_NAME
    if checkpoint is not None and _is_empty(path):
        raise DamagedRun(path, f"holds no evaluations, but {CHECKPOINT_NAME} records "
                               f"{checkpoint['database']['evaluations']} (emptied or replaced): restore it, or delete "
                               f"{run_dir} to start over")
    return RunDatabase(path, fingerprint, model_hash, calibration_hash), checkpoint


def _is_empty(path: Path) -> bool:
    """No file, a file of no bytes, or a database without tables (SQLite creates them on first use)."""
    if not path.is_file() or path.stat().st_size == 0:
        return True
    import sqlite3
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0
        finally:
            db.close()
    except sqlite3.Error:
        return False  # RunDatabase names the problem


def check_resume(db: RunDatabase, checkpoint: Optional[dict], fingerprint: str, settings_stored: bool) -> None:
    """Refuse to continue unless the database holds every evaluation the checkpoint records, unchanged."""
    if not settings_stored and db.count():
        raise DamagedRun(db.path, "holds evaluations but not the run's settings (changed or damaged)")
    if checkpoint is None:
        return
    path = db.path.parent / CHECKPOINT_NAME
    if checkpoint.get("fingerprint") != fingerprint:
        raise DamagedRun(path, f"belongs to a run with other settings than its database; delete it to replay the "
                               f"search from the evaluations in {DATABASE_NAME}")
    why = db.holds(checkpoint["database"])
    if why is not None:
        raise DamagedRun(db.path, f"{why}; restore it (with its {SIDE_FILES[0]} file, if any), or delete "
                                  f"{CHECKPOINT_NAME} to replay the search with the evaluations it still holds "
                                  "(the missing ones are evaluated again)")
