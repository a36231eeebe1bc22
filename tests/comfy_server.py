"""Starting a real ComfyUI server (``main.py --cpu``) with this pack and the testing pack installed.

Everything the server writes goes to a temporary base directory; the ComfyUI checkout is not touched.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
TESTING_PACK = REPO / "tests" / "testing_nodes" / "ecad_testing"
PACK_NAME = "ComfyUI-ECAD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    base: Path
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def schedules(self) -> Path:
        return self.base / "models" / "ecad_schedules"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from None

    def run_prompt(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format workflow and wait for its history entry."""
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": "ecad-tests"})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(comfyui: Path, base: Path, before_start=None, timeout: float = 180) -> ComfyServer:
    """Start ComfyUI with ``base`` as its base directory holding this pack and the testing pack."""
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    (custom_nodes / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    (custom_nodes / "ecad_testing").symlink_to(TESTING_PACK, target_is_directory=True)
    (base / "models" / "ecad_schedules").mkdir(parents=True, exist_ok=True)
    if before_start is not None:
        before_start(base)
    port = free_port()
    log_path = base / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--base-directory", str(base), "--database-url", "sqlite:///:memory:"],
        cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = ComfyServer(base, port, process, log_path)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited during start-up:\n{server.log()[-4000:]}")
        try:
            server.get("/object_info/KSampler")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{server.log()[-4000:]}")


def find_comfyui() -> Optional[Path]:
    path = os.environ.get("COMFYUI_PATH")
    return Path(path) if path else None
