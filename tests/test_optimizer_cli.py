"""``python -m optimizer.run`` on the toy preset (no ComfyUI needed): results, resume after SIGKILL, and
clear errors before any long work."""
from __future__ import annotations

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
    rows = db.execute("SELECT genome_hash, quality, macs, scores, calibration_hash, model_hash, origin, generation "
                      "FROM evaluations").fetchall()
    generations = db.execute("SELECT generation, evaluated FROM generations ORDER BY generation").fetchall()
    settings = json.loads(db.execute("SELECT value FROM run WHERE key = 'settings'").fetchone()[0])
    db.close()
    baselines_after_search = [r for r in rows if r[7] == -1]  # FORA-N not in the initial population
    assert {r[6] for r in baselines_after_search} <= {"FORA-2", "FORA-3", "FORA-4", "FORA-5"}
    assert len(rows) == len({r[0] for r in rows}) == sum(n for _, n in generations) + len(baselines_after_search)
    assert [g for g, _ in generations] == [0, 1, 2, 3, 4]
    assert all(len(json.loads(r[3])) == 6 for r in rows)  # 3 prompts × 2 seeds
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

def _mid_generation(db_path: Path) -> bool:
    """A generation has finished (checkpoint written) and a later one has evaluations in the database."""
    if not db_path.is_file():
        return False
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            done = db.execute("SELECT COUNT(*), COALESCE(SUM(evaluated), 0) FROM generations").fetchone()
            evaluations = db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:  # tables not created yet
        return False
    return done[0] >= 2 and evaluations > done[1]


def test_sigkill_mid_generation_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    whole = run_cli(*TOY, "--run-dir", str(tmp_path / "whole"), "--out", str(tmp_path / "whole.json"))
    assert whole.returncode == 0, whole.stderr

    run_dir, out = tmp_path / "killed", tmp_path / "killed.json"
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    proc = subprocess.Popen([sys.executable, "-m", "optimizer.run", *TOY, "--run-dir", str(run_dir), "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not _mid_generation(run_dir / "run.sqlite"):
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and (run_dir / CHECKPOINT_NAME).is_file()

    resumed = run_cli(*TOY, "--run-dir", str(run_dir), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after generation" in resumed.stdout
    assert frontier_of(out) == frontier_of(tmp_path / "whole.json")
    a, b = (load_schedule(p).provenance["search"] for p in (out, tmp_path / "whole.json"))
    assert a == b  # same generations and the same number of schedules evaluated


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
