"""``python -m optimizer.run`` on the toy preset (no ComfyUI needed): results, resume after SIGKILL, and
clear errors before any long work."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecad_nodes.schedule_io import load_schedule
from optimizer.run import build_parser, main
from optimizer.search import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parent.parent


def toy_args(generations: int = 4) -> list[str]:
    """Small enough for a shared CI core; large enough for several generations to matter."""
    return ["--model", "toy", "--population", "6", "--generations", str(generations), "--num-prompts", "3",
            "--images-per-prompt", "2", "--no-progress"]


TOY = toy_args()


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}  # the toy preset needs no ComfyUI
    return subprocess.run([sys.executable, "-m", "optimizer.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def frontier_of(path: Path) -> list[tuple]:
    """What must match between two runs: every point's and baseline's name, mask and measured figures."""
    s = load_schedule(path)
    return [(p.name, p.mask.bits.tobytes(), p.metrics.quality, p.metrics.macs, p.metrics.full_macs)
            for p in [*s.points, *s.baselines]]


# ---------------------------------------------------------------- a whole run

@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy_run")
    out = tmp / "toy.json"
    done = run_cli(*TOY, "--run-dir", str(tmp / "run"), "--out", str(out), "--holdout", "3")
    assert done.returncode == 0, done.stderr
    return tmp, out, done


def test_run_writes_a_frontier_schedule_file(toy_run):
    tmp, out, done = toy_run
    schedule = load_schedule(out)
    assert schedule.family == "toy" and schedule.steps == 8
    assert 1 <= len(schedule.points) <= 8
    names = [p.name for p in schedule.points]
    assert all(" · " not in n and n.startswith("ecad-") for n in names)
    for p in schedule.points:
        m = p.metrics
        assert m.quality_metric == "fidelity" and m.full_macs > m.macs > 0
        assert not p.mask.bits.all() and p.mask.bits[0].all()
        assert "holdout_quality" in m.extra
    # the points are the frontier: sorted by cost, quality falls as the schedules get cheaper
    by_macs = sorted(schedule.points, key=lambda p: p.metrics.macs)
    assert [p.metrics.quality for p in by_macs] == sorted(p.metrics.quality for p in by_macs)
    assert [b.name for b in schedule.baselines] == ["FORA-2", "FORA-3", "FORA-4", "FORA-5"]
    for b in schedule.baselines:  # no frontier point is dominated by a baseline
        assert not any(b.metrics.macs <= p.metrics.macs and b.metrics.quality > p.metrics.quality
                       for p in schedule.points)
    prov = schedule.provenance
    assert prov["preset"] == "toy" and prov["search"]["generations_run"] == 4 and prov["search"]["population"] == 6
    assert prov["calibration"]["num_prompts"] == 3 and len(prov["calibration"]["prompts_hash"]) == 16
    assert prov["holdout"]["num_prompts"] == 3 and prov["holdout"]["seeds"] == "1000000..1000005"  # 3 prompts × 2 images, one seed each
    assert (tmp / "run" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "generation 4/4: HV" in done.stdout and "FORA-2" in done.stdout


def test_run_database_holds_every_evaluation(toy_run):
    tmp, out, _ = toy_run
    db = sqlite3.connect(tmp / "run" / "run.sqlite")
    rows = db.execute("SELECT genome_hash, quality, macs, scores, calibration_hash, model_hash, origin, generation, "
                      "full, items, images FROM evaluations").fetchall()
    generations = db.execute("SELECT generation, evaluated FROM generations ORDER BY generation").fetchall()
    settings = json.loads(db.execute("SELECT value FROM run WHERE key = 'settings'").fetchone()[0])
    db.close()
    baselines_after_search = [r for r in rows if r[7] == -1]  # FORA-N not in the initial population
    assert {r[6] for r in baselines_after_search} <= {"FORA-2", "FORA-3", "FORA-4", "FORA-5"}
    # a genome once per racing stage it reached (screens on 2, then 4 images) and once on every image, at most
    assert len(rows) == len({(r[0], r[9]) for r in rows}) == sum(n for _, n in generations) + len(baselines_after_search)
    assert [g for g, _ in generations] == [0, 1, 2, 3, 4]
    screens, full = [r for r in rows if not r[8]], [r for r in rows if r[8]]
    assert screens and full
    assert all(len(json.loads(r[3])) == 6 and json.loads(r[9]) == [] for r in full)  # 3 prompts × 2 seeds
    first = [r for r in screens if len(json.loads(r[9])) == 2]        # an eighth, at least 2
    second = [r for r in screens if len(json.loads(r[9])) == 4]       # twice as many: only the 2 new ones rendered
    assert first and second and len(first) + len(second) == len(screens)
    assert all(len(json.loads(r[3])) == len(json.loads(r[9])) and r[10] == 2 for r in screens)
    twice = {r[0] for r in second}
    assert twice <= {r[0] for r in first}
    screened = {r[0]: 4 if r[0] in twice else 2 for r in first}     # images of a genome's last screen
    assert all(r[10] == 6 - screened.get(r[0], 0) for r in full)   # after the screens, only the rest is rendered
    assert {r[4] for r in rows} == {load_schedule(out).provenance["calibration"]["prompts_hash"]}
    assert any(r[6] == "FORA-2" for r in rows) and any(r[6].startswith("generation") for r in rows)
    assert settings["steps"] == 8 and settings["preset"] == "toy"


def test_rerun_into_the_same_run_dir_needs_resume(toy_run, capsys):
    tmp, out, _ = toy_run
    assert main([*TOY, "--run-dir", str(tmp / "run"), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # resuming a finished run with other settings is refused, naming each difference
    assert main([*TOY, "--run-dir", str(tmp / "run"), "--out", str(out), "--resume", "--steps", "6", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "steps: the run has 8, now 6" in err and "seed: the run has 0, now 3" in err


# ---------------------------------------------------------------- killed and resumed

def read_run_database(db_path: Path, *queries: str) -> list[tuple] | None:
    """The first row of each query on a running run's database, read-only; None while it has no tables yet."""
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return [db.execute(query).fetchone() for query in queries]
        finally:
            db.close()
    except sqlite3.OperationalError:  # tables not created yet
        return None


def _mid_generation(db_path: Path, finished: int = 2) -> bool:
    """``finished`` generations are done (checkpoint written) and a later one has evaluations in the database."""
    rows = read_run_database(db_path, "SELECT COUNT(*), COALESCE(SUM(evaluated), 0) FROM generations",
                             "SELECT COUNT(*) FROM evaluations")
    if rows is None:
        return False
    done, (evaluations,) = rows
    return done[0] >= finished and evaluations > done[1]


def sigkill_mid_generation(args: list[str], run_dir: Path, *, env: dict | None = None, timeout: float = 600,
                           finished: int = 2, when=None) -> int:
    """Start ``python -m optimizer.run ARGS`` and SIGKILL it once ``_mid_generation`` (or ``when``, given the database's
    path) holds for ``run_dir``'s database; its exit code. Its stderr goes to a file, not a pipe, so a chatty run
    cannot block on it."""
    when = when or (lambda db_path: _mid_generation(db_path, finished))
    import tempfile
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "optimizer.run", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + timeout
            while not when(run_dir / "run.sqlite"):
                if proc.poll() is not None:
                    stderr.seek(0)
                    raise AssertionError(f"the run ended before it could be killed: {stderr.read()[-3000:]}")
                assert time.monotonic() < deadline, f"the moment to kill the run did not come within {timeout} s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[list[tuple], dict]:
    """The frontier and search provenance of a run that was never interrupted."""
    tmp = tmp_path_factory.mktemp("whole")
    whole = run_cli(*TOY, "--run-dir", str(tmp / "run"), "--out", str(tmp / "whole.json"))
    assert whole.returncode == 0, whole.stderr
    return frontier_of(tmp / "whole.json"), load_schedule(tmp / "whole.json").provenance["search"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run directory as SIGKILL left it mid-generation: a checkpoint, and later evaluations in the -wal file.

    Tests work on copies (``copy_killed``)."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    code = sigkill_mid_generation([*TOY, "--run-dir", str(run_dir), "--out", str(run_dir.parent / "killed.json")],
                                  run_dir, env=env)
    assert code == -signal.SIGKILL
    assert not (run_dir.parent / "killed.json").exists() and (run_dir / CHECKPOINT_NAME).is_file()
    return run_dir


def copy_killed(killed: Path, tmp_path: Path) -> Path:
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir)
    return run_dir


def test_sigkill_mid_generation_then_resume_ends_like_an_uninterrupted_run(killed, uninterrupted, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "resumed.json"
    resumed = run_cli(*TOY, "--run-dir", str(run_dir), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after generation" in resumed.stdout
    assert frontier_of(out) == uninterrupted[0]
    assert load_schedule(out).provenance["search"] == uninterrupted[1]  # same generations and evaluation count


# ---------------------------------------------------------------- damaged run directories

def resume(run_dir: Path, out: Path, **kwargs) -> subprocess.CompletedProcess:
    return run_cli(*TOY, "--run-dir", str(run_dir), "--out", str(out), "--resume", **kwargs)


def assert_refused(done: subprocess.CompletedProcess, path: Path, *, problem: str = "", out: Path | None = None) -> str:
    """Exit 2 with one clean line ``error: <file>: <problem>``, no traceback, and no schedule file written."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert done.stderr.startswith(f"error: {path}: {problem}"), done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert out is None or not out.exists()
    return done.stderr


def evaluation_count(run_dir: Path) -> int:
    db = sqlite3.connect(run_dir / "run.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    finally:
        db.close()


def test_an_emptied_database_is_refused_and_left_as_it_is(killed, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    for side in ("run.sqlite-wal", "run.sqlite-shm"):
        (run_dir / side).unlink(missing_ok=True)
    (run_dir / "run.sqlite").write_bytes(b"")
    err = assert_refused(resume(run_dir, out), run_dir / "run.sqlite", problem="holds no evaluations, but checkpoint.pkl "
                         "records", out=out)
    assert f"delete {run_dir} to start over" in err
    assert (run_dir / "run.sqlite").stat().st_size == 0  # nothing was written into it


def test_a_truncated_database_is_refused(killed, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    db = run_dir / "run.sqlite"
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    assert_refused(resume(run_dir, out), db, out=out)


def test_a_database_with_a_damaged_header_is_refused(killed, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    with open(run_dir / "run.sqlite", "r+b") as f:
        f.write(b"garbage!")
    assert_refused(resume(run_dir, out), run_dir / "run.sqlite", problem="is not an SQLite database", out=out)


def test_a_changed_evaluation_is_refused(killed, tmp_path):
    """One stored quality changed in place (SQLite's own check cannot see it): its row checksum can."""
    import struct
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    db = sqlite3.connect(run_dir / "run.sqlite")
    [(quality,)] = db.execute("SELECT quality FROM evaluations ORDER BY seq LIMIT 1").fetchall()
    db.close()
    data = bytearray((run_dir / "run.sqlite").read_bytes())
    stored = struct.pack(">d", quality)  # SQLite keeps a REAL as 8 big-endian bytes
    assert data.count(stored) == 1, "the first evaluation is in the database file (synced before the checkpoint)"
    at = data.index(stored)
    data[at + 7] ^= 0x01  # the last bit of the mantissa
    (run_dir / "run.sqlite").write_bytes(bytes(data))
    assert_refused(resume(run_dir, out), run_dir / "run.sqlite", problem="1 of its", out=out)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_garbled_database_pages_give_a_named_error_or_the_uninterrupted_frontier(killed, uninterrupted, tmp_path,
                                                                                  fraction):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    db = run_dir / "run.sqlite"
    data = bytearray(db.read_bytes())
    at = int(len(data) * fraction)
    data[at:at + 256] = bytes((i * 37 + 11) % 256 for i in range(256))
    db.write_bytes(bytes(data))
    done = resume(run_dir, out)
    if done.returncode == 0:  # the garbled bytes were in free space
        assert frontier_of(out) == uninterrupted[0]
    else:
        assert_refused(done, db, out=out)


def test_a_deleted_database_is_refused_while_its_checkpoint_remains(killed, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    for name in ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)
    done = resume(run_dir, out)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--resume: {run_dir / 'run.sqlite'} is missing, but {run_dir / CHECKPOINT_NAME} is there" in done.stderr
    # nor does a new run start on the old checkpoint
    fresh = run_cli(*TOY, "--run-dir", str(run_dir), "--out", str(out))
    assert fresh.returncode == 2 and f"{run_dir} holds checkpoint.pkl from an earlier run but no run.sqlite" in fresh.stderr
    assert not out.exists()


def test_a_lost_write_ahead_log_repeats_only_what_it_held(killed, uninterrupted, tmp_path):
    """The log held the evaluations made after the last checkpoint: the resumed run evaluates them again."""
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    assert (run_dir / "run.sqlite-wal").stat().st_size > 0, "the killed run left evaluations in its log"
    with_log = evaluation_count(copy_killed(killed, tmp_path / "probe"))
    for side in ("run.sqlite-wal", "run.sqlite-shm"):
        (run_dir / side).unlink()
    assert evaluation_count(run_dir) < with_log
    done = resume(run_dir, out)
    assert done.returncode == 0, done.stderr
    assert frontier_of(out) == uninterrupted[0]
    assert load_schedule(out).provenance["search"] == uninterrupted[1]


def test_a_garbled_write_ahead_log_repeats_only_what_it_held(killed, uninterrupted, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    wal = run_dir / "run.sqlite-wal"
    data = bytearray(wal.read_bytes())
    at = len(data) // 2
    data[at:at + 512] = bytes(512)
    wal.write_bytes(bytes(data))
    done = resume(run_dir, out)
    if done.returncode == 0:
        assert frontier_of(out) == uninterrupted[0]
    else:
        assert_refused(done, run_dir / "run.sqlite", out=out)


def test_a_garbled_checkpoint_is_refused_and_deleting_it_replays_the_same_search(killed, uninterrupted, tmp_path):
    run_dir, out = copy_killed(killed, tmp_path), tmp_path / "out.json"
    checkpoint = run_dir / CHECKPOINT_NAME
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    err = assert_refused(resume(run_dir, out), checkpoint, problem="cannot be read: it is damaged", out=out)
    assert "delete it to replay the search from its first generation" in err
    checkpoint.unlink()  # as the message says
    done = resume(run_dir, out)
    assert done.returncode == 0, done.stderr
    assert frontier_of(out) == uninterrupted[0]


@contextlib.contextmanager
def unwritable(folder: Path):
    """``folder`` closed to new files while the block runs: mode 555, or immutable for root (who writes into any
    folder whatever its mode)."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"running as root and chattr +i is not available here: {made.stderr.strip()}")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_a_read_only_run_directory_is_a_clean_error(killed, tmp_path):
    """Resuming writes the database's log and a new checkpoint beside the database; --out elsewhere does not help."""
    run_dir, out_dir = copy_killed(killed, tmp_path), tmp_path / "out"
    out_dir.mkdir()
    with unwritable(run_dir):
        assert not os.access(run_dir, os.W_OK)
        done = run_cli(*TOY, "--run-dir", str(run_dir), "--out", str(out_dir / "out.json"), "--resume")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: cannot start:")
    assert f"--run-dir {run_dir} is not writable: resuming writes run.sqlite's log" in done.stderr
    assert not (out_dir / "out.json").exists()


def test_resume_can_extend_a_finished_run(tmp_path):
    where = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")]
    first = run_cli(*toy_args(generations=1), *where)
    assert first.returncode == 0, first.stderr
    more = run_cli(*toy_args(generations=2), *where, "--resume")
    assert more.returncode == 0, more.stderr
    assert "resuming after generation 1" in more.stdout and "generation 2/2" in more.stdout
    assert "generation 1/2" not in more.stdout
    assert load_schedule(tmp_path / "out.json").provenance["search"]["generations_run"] == 2


# ---------------------------------------------------------------- errors before any work

def _fails_before_work(capsys, tmp_path, *extra: str) -> str:
    run_dir = tmp_path / "run"
    assert main([*TOY, "--run-dir", str(run_dir), "--out", str(tmp_path / "out.json"), *extra]) == 2
    assert not (run_dir / "run.sqlite").exists(), "the run started before the error was found"
    err = capsys.readouterr().err
    assert err.startswith("error: cannot start")
    return err


def test_prompt_file_without_prompts(capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# just a comment\n\n   \n", encoding="utf-8")
    err = _fails_before_work(capsys, tmp_path, "--prompts", str(prompts))
    assert str(prompts) in err and "holds no prompts" in err
    err = _fails_before_work(capsys, tmp_path, "--prompts", str(tmp_path / "missing.tsv"))
    assert "missing.tsv does not exist" in err


def test_unwritable_output_paths(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = _fails_before_work(capsys, tmp_path, "--out", str(blocker / "out.json"))
    assert f"--out {blocker / 'out.json'} cannot be created: {blocker} is not a directory" in err
    err = _fails_before_work(capsys, tmp_path, "--out", str(tmp_path))
    assert "is a directory" in err


def test_an_existing_out_file_in_a_folder_that_cannot_take_its_replacement_is_refused_before_work(capsys, tmp_path):
    """The file is replaced atomically: the new one is written beside it first, so its folder must be writable."""
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / "out.json").write_text("{}")
    with unwritable(folder):
        err = _fails_before_work(capsys, tmp_path, "--out", str(folder / "out.json"))
    assert f"--out {folder / 'out.json'} cannot be replaced: {folder} is not writable" in err


def test_resuming_with_a_budget_below_what_the_run_rendered_is_refused(toy_run, capsys, tmp_path):
    import shutil
    tmp, _, _ = toy_run
    run_dir = tmp_path / "run"
    shutil.copytree(tmp / "run", run_dir)
    assert main([*TOY, "--run-dir", str(run_dir), "--out", str(tmp_path / "out.json"), "--holdout", "3", "--resume",
                 "--budget-images", "120"]) == 2
    err = capsys.readouterr().err
    assert "--budget-images 120 is less than the " in err and f"images the run in {run_dir} has rendered already" in err
    assert not (tmp_path / "out.json").exists()


def test_quick_calibration_does_not_suggest_a_resume_it_cannot_do(toy_run, capsys, tmp_path):
    from optimizer.calibrate import main as calibrate
    tmp, _, _ = toy_run
    assert calibrate(["--model", "toy", "--run-dir", str(tmp / "run"), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp / 'run'} already holds a run: choose another --run-dir" in err and "--resume" not in err


def test_missing_image_reward_files(capsys, tmp_path):
    err = _fails_before_work(capsys, tmp_path, "--metric", "image_reward",
                             "--image-reward-weights", str(tmp_path / "nowhere" / "ImageReward.pt"))
    assert "ImageReward.pt" in err and str(tmp_path / "nowhere" / "ImageReward.pt") in err
    assert "med_config.json" in err


def test_image_reward_files_are_named_with_the_other_problems(capsys, tmp_path):
    err = _fails_before_work(capsys, tmp_path, "--metric", "image_reward", "--steps", "1", "--cost", "macs-attention",
                             "--image-reward-config", str(tmp_path / "med_config.json"))
    assert "--steps must be at least 2" in err and "--cost macs-attention" in err
    assert f"{tmp_path / 'med_config.json'} (given as --image-reward-config) does not exist" in err


def test_several_problems_are_reported_together(capsys, tmp_path):
    err = _fails_before_work(capsys, tmp_path, "--steps", "1", "--metric", "sharpness", "--num-prompts", "500")
    assert "--steps must be at least 2" in err and "unknown --metric 'sharpness'" in err
    assert "--num-prompts 500: the prompt file has only 100 prompts" in err


def test_unknown_preset_and_nothing_to_resume(capsys, tmp_path):
    assert main(["--model", "flux-devv"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'flux-devv'" in err and "flux-dev" in err and "tiny-flux" in err
    err = _fails_before_work(capsys, tmp_path, "--resume")
    assert "holds no run to resume" in err


def test_help_explains_every_option():
    parser = build_parser()
    for action in parser._actions:
        assert action.help and len(action.help) > 10, f"{action.option_strings} has no help"
    shown = run_cli("--help")
    assert shown.returncode == 0
    for name in ("flux-dev", "flux-schnell", "pixart-alpha", "pixart-sigma", "tiny-flux", "tiny-pixart", "toy"):
        assert f"  {name} " in shown.stdout
    for option in ("--resume", "--run-dir", "--out", "--metric", "--cost", "--prompts", "--images-per-prompt",
                   "--population", "--generations", "--seed", "--steps", "--comfyui", "--holdout"):
        assert option in shown.stdout
