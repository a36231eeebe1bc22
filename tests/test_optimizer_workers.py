"""The optimizer on Ray workers (``--workers``/``--ray-address``), with a real local Ray and CPU actors: the same
frontier, database and image count as one process whatever the number of workers, an actor SIGKILLed mid-run
replaced without changing anything, a driver SIGKILLed and resumed with workers, quick calibration on workers,
missing model files on a worker named as a run in one process names them, and no Ray without the options.

Most runs join one Ray instance this module starts (``--ray-address``), so that each saves Ray's start; one starts
its own (``--workers`` alone), as a user's run does. No Ray process outlives the module or a killed run."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from ecad_nodes.schedule_io import load_schedule
from test_optimizer_cli import _mid_generation, frontier_of, run_cli, sigkill_mid_generation

ray = pytest.importorskip("ray", reason="Ray is an optional dependency (requirements-optimizer.txt)")

ROOT = Path(__file__).resolve().parent.parent
TOY_BUDGETED = ["--model", "toy", "--population", "6", "--generations", "8", "--num-prompts", "3",
                "--images-per-prompt", "2", "--surrogate-evaluations", "4", "--holdout", "1", "--measure-latency", "1",
                "--budget-images", "380", "--no-progress"]
TINY_FLUX = ["--model", "tiny-flux", "--population", "4", "--generations", "2", "--num-prompts", "2",
             "--images-per-prompt", "2", "--no-progress"]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module's runs to join (3 CPUs: two workers and a replacement)."""
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def comfy_run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizer.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def rows_of(run_dir: Path) -> list[tuple]:
    """Every evaluation in insertion order, with what it measured and rendered."""
    db = sqlite3.connect(run_dir / "run.sqlite")
    try:
        return db.execute("SELECT seq, genome_hash, full, quality, cost, scores, items, images, origin, generation "
                          "FROM evaluations ORDER BY seq").fetchall()
    finally:
        db.close()


def wait_for_cpus(cpus: float, timeout: float = 60) -> bool:
    """Whether the module's Ray instance has ``cpus`` CPUs free again within ``timeout`` (actors end asynchronously)."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU") != cpus:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def end_all(processes: list[psutil.Process]) -> None:
    """SIGKILL what is left of the processes a killed run started (Ray's agents outlive their raylet for a while)."""
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


class LiveRun:
    """``python -m optimizer.run`` in a subprocess whose output is read as it comes (the workers' pids)."""

    def __init__(self, args: list[str], env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "optimizer.run", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    def worker_pids(self, count: int, deadline: float) -> list[int]:
        while True:
            pids = [int(m.group(1)) for line in list(self.lines)
                    if (m := re.match(r"worker \d+ \(pid (\d+) on .*\): .*loaded in", line))]
            if len(pids) >= count:
                return pids[:count]
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def wait(self, timeout: float = 900) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return code, "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the toy model (no ComfyUI)

@pytest.fixture(scope="module")
def toy_alone(tmp_path_factory):
    """A budgeted toy run in one process (held-out check and latency rounds included): what every worker count must
    reproduce."""
    tmp = tmp_path_factory.mktemp("alone")
    done = run_cli(*TOY_BUDGETED, "--run-dir", str(tmp / "run"), "--out", str(tmp / "out.json"))
    assert done.returncode == 0, done.stderr
    assert "the budget ended the search early" in done.stdout
    return tmp


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_reproduce_one_process_exactly(workers, toy_alone, ray_address, tmp_path):
    """The same evaluations in the same order, the same images counted against the same budget, the same file."""
    done = run_cli(*TOY_BUDGETED, "--workers", str(workers), "--ray-address", ray_address, "--run-dir",
                   str(tmp_path / "run"), "--out", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr
    assert f"on {workers} workers" in done.stdout and "the driver's own work" in done.stdout
    assert frontier_of(tmp_path / "out.json") == frontier_of(toy_alone / "out.json")
    ours, theirs = (load_schedule(p / "out.json") for p in (tmp_path, toy_alone))
    assert ours.provenance["search"] == theirs.provenance["search"]  # images, evaluations, generations, budget
    assert ours.provenance["holdout"] == theirs.provenance["holdout"]
    assert [p.metrics.extra["holdout_quality"] for p in ours.points] == \
        [p.metrics.extra["holdout_quality"] for p in theirs.points]
    assert all(p.metrics.latency_ms for p in ours.points)  # timed on a worker
    assert rows_of(tmp_path / "run") == rows_of(toy_alone / "run")


def test_a_driver_killed_mid_generation_resumes_with_workers_to_the_same_frontier(toy_alone, tmp_path):
    """The run starts its own Ray (``--workers`` alone); SIGKILLed mid-generation, it leaves nothing running once
    Ray's own processes are gone, and ``--resume`` with workers ends as the uninterrupted run in one process."""
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    args = [*TOY_BUDGETED, "--workers", "2", "--run-dir", str(run_dir), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    run = LiveRun(args, env)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 600
        run.worker_pids(2, deadline)
        # after the first generation, not the second: the toy's later generations take milliseconds on workers
        while not _mid_generation(run_dir / "run.sqlite", finished=1):
            assert run.proc.poll() is None and time.monotonic() < deadline, "".join(run.lines)
            time.sleep(0.01)
        started = descendants(run.proc.pid)
        assert any("raylet" in " ".join(p.cmdline()) for p in started)
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=60)
    finally:
        run.kill()
        end_all(started + descendants(run.proc.pid))
    assert run.proc.returncode == -signal.SIGKILL and not out.exists()
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after generation" in resumed.stdout
    assert frontier_of(out) == frontier_of(toy_alone / "out.json")
    assert load_schedule(out).provenance["search"] == load_schedule(toy_alone / "out.json").provenance["search"]


def test_quick_calibration_on_workers_writes_what_one_process_writes(ray_address, tmp_path):
    """References recorded on a worker (the component changes come back), every schedule verified in batches."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    outs = {}
    for name, extra in (("alone", []), ("workers", ["--workers", "2", "--ray-address", ray_address])):
        done = subprocess.run([sys.executable, "-m", "optimizer.calibrate", "--model", "toy", "--no-progress",
                               "--run-dir", str(tmp_path / name), "--out", str(tmp_path / f"{name}.json"), *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        outs[name] = tmp_path / f"{name}.json"
    assert frontier_of(outs["workers"]) == frontier_of(outs["alone"])
    searched = [load_schedule(p).provenance["search"] for p in outs.values()]
    assert searched[0] == searched[1]
    assert (tmp_path / "alone" / "changes.npz").read_bytes() == (tmp_path / "workers" / "changes.npz").read_bytes()


def test_without_workers_nothing_imports_ray(tmp_path):
    code = ("import sys; from optimizer.run import main; "
            f"code = main({['--model', 'toy', '--population', '4', '--generations', '1', '--num-prompts', '2', '--no-progress', '--run-dir', str(tmp_path / 'run'), '--out', str(tmp_path / 'out.json')]!r}); "
            "assert code == 0; print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_worker_options_are_checked_with_the_others(capsys, tmp_path):
    from optimizer.run import main
    assert main(["--model", "toy", "--workers", "0", "--steps", "1", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--workers must be at least 1, got 0" in err and "--steps must be at least 2" in err
    assert not (tmp_path / "run").exists()


def test_a_cluster_without_gpus_needs_a_worker_count(capsys, tmp_path, ray_address):
    from optimizer.run import main
    assert main(["--model", "toy", "--ray-address", ray_address, "--run-dir", str(tmp_path / "run")]) == 2
    assert "has no GPU: give --workers N to run N CPU workers there" in capsys.readouterr().err
    assert main(["--model", "toy", "--workers", "4", "--ray-address", ray_address,
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "--workers 4 with 1 thread(s) each needs 4 CPUs; the Ray instance this process joined has 3" in \
        capsys.readouterr().err
    assert not (tmp_path / "run" / "run.sqlite").exists()


# ---------------------------------------------------------------- tiny-flux through ComfyUI

@pytest.fixture(scope="module")
def flux_one_worker(ray_address, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flux-one")
    done = comfy_run(*TINY_FLUX, "--workers", "1", "--ray-address", ray_address, "--run-dir", str(tmp / "run"),
                     "--out", str(tmp / "out.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp


@pytest.mark.comfy
def test_tiny_flux_two_workers_give_one_workers_frontier(flux_one_worker, ray_address, tmp_path):
    done = comfy_run(*TINY_FLUX, "--workers", "2", "--ray-address", ray_address, "--run-dir", str(tmp_path / "run"),
                     "--out", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert frontier_of(tmp_path / "out.json") == frontier_of(flux_one_worker / "out.json")
    assert rows_of(tmp_path / "run") == rows_of(flux_one_worker / "run")


@pytest.mark.comfy
def test_tiny_flux_worker_killed_mid_render_is_replaced_and_changes_nothing(flux_one_worker, ray_address, tmp_path):
    """A worker SIGKILLed while it renders: its batch goes to the other, a new worker loads the model, and the run
    ends with the frontier of one worker."""
    run = LiveRun([*TINY_FLUX, "--workers", "2", "--ray-address", ray_address, "--run-dir", str(tmp_path / "run"),
                   "--out", str(tmp_path / "out.json")])
    try:
        deadline = time.monotonic() + 600
        victim = run.worker_pids(2, deadline)[1]
        title = ""
        while ".render_and_score" not in title:  # Ray names what an actor is doing in its process title
            assert run.proc.poll() is None and time.monotonic() < deadline, "".join(run.lines)
            with open(f"/proc/{victim}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        code, output = run.wait()
    finally:
        run.kill()
    assert code == 0, output[-3000:]
    assert re.search(rf"worker 1 \(pid {victim} on .*\) died .*its batch goes to the other workers; starting a new one",
                     output), output[-3000:]
    assert frontier_of(tmp_path / "out.json") == frontier_of(flux_one_worker / "out.json")
    assert rows_of(tmp_path / "run") == rows_of(flux_one_worker / "run")


@pytest.mark.comfy
def test_tiny_flux_driver_killed_and_resumed_with_workers_gives_the_same_frontier(flux_one_worker, ray_address,
                                                                                  tmp_path):
    args = [*TINY_FLUX, "--workers", "2", "--ray-address", ray_address, "--run-dir", str(tmp_path / "run"),
            "--out", str(tmp_path / "out.json")]
    assert sigkill_mid_generation(args, tmp_path / "run") == -signal.SIGKILL
    resumed = comfy_run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after generation" in resumed.stdout
    assert frontier_of(tmp_path / "out.json") == frontier_of(flux_one_worker / "out.json")
    assert wait_for_cpus(3)  # the killed driver's workers ended with it, the resumed one's with its run


@pytest.mark.comfy
def test_model_files_missing_on_a_worker_stop_the_run_as_they_would_here(ray_address, tmp_path):
    """A worker checks the files on its own machine: the problems are those a run in one process reports."""
    from dataclasses import replace

    from optimizer.comfy_backend import ComfyModels
    from optimizer.presets import preset
    from optimizer.run import build_parser
    from optimizer.spec import SetupError, spec_from_args
    from optimizer.workers import WorkerPool

    spec = spec_from_args(build_parser().parse_args([*TINY_FLUX, "--workers", "1", "--run-dir", str(tmp_path / "run")]))
    # as if the driver's machine had flux-dev's files and the worker's had none
    spec = replace(spec, preset=preset("flux-dev"), diffusion_model=str(tmp_path / "missing-flux.safetensors"))
    here, _ = ComfyModels().check(spec)
    assert here and "model files are missing (nothing was loaded)" in here[0]
    pool = WorkerPool.connect(spec, say=lambda line: None)
    try:
        with pytest.raises(SetupError) as refused:
            pool.open()
    finally:
        pool.close()
    message = str(refused.value)
    assert message.startswith("cannot start: a worker (pid ") and "found problems on its machine" in message
    assert all(line in message for line in here[0].splitlines())
    assert wait_for_cpus(3)  # the refused worker is gone


@ray.remote(num_cpus=1)
class _Fragile:
    """An actor whose ``work`` ends its own process on a poisoned input, like a worker that crashes on one batch."""

    def load(self):
        return os.getpid()

    def work(self, x):
        if x == "poison":
            os._exit(3)
        return x * 2


def test_a_batch_that_keeps_killing_its_workers_stops_the_pool_with_a_run_failure(ray_address):
    """Deaths are retried on fresh actors (results still in call order); a batch that ends three of them stops the
    run with a RunFailure (the CLIs print it as an 'error:' line and point at --resume) instead of killing forever."""
    from optimizer.ray_pool import MAX_DEATHS_PER_CALL, ActorPool, PoolFailure
    from optimizer.spec import RunFailure
    said = []
    pool = ActorPool(_Fragile, (), {}, size=2, say=said.append)
    pool.start()
    assert pool.map([("work", (1,)), ("work", (2,)), ("work", (3,))]) == [2, 4, 6]
    with pytest.raises(PoolFailure, match=f"ended {MAX_DEATHS_PER_CALL} workers") as caught:
        pool.map([("work", (4,)), ("work", ("poison",))])
    assert isinstance(caught.value, RunFailure)
    assert pool.restarts >= MAX_DEATHS_PER_CALL - 1 and any("died" in line for line in said)
    assert pool.map([("work", (5,))]) == [10]  # the replacements still work
