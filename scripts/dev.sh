#!/usr/bin/env bash
# Set-up and entry points for a fresh machine: `scripts/dev.sh demo|test|optimize` (the Makefile calls these).
#
# Creates .venv with PyTorch and the project's dependencies, finds ComfyUI (COMFYUI_PATH, else a
# pinned ComfyUI cloned into .comfyui/), then runs the demo, the tests or a tiny optimizer run.
# Without ComfyUI (offline, as in CI) the demo says so and the ComfyUI tests skip; the rest runs.
set -euo pipefail
cd "$(dirname "$0")/.."

COMFYUI_REPO=${COMFYUI_REPO:-https://github.com/comfyanonymous/ComfyUI}
COMFYUI_COMMIT=a125cd84b054a57729b5eecab930ca9408719832   # v0.3.64, 2025-10-12: the release this pack is tested on
TORCH_PINS=${TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
PY=.venv/bin/python

say() { printf '\n== %s\n' "$*"; }

setup_venv() {
  if [ ! -x "$PY" ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    say "installing PyTorch ($TORCH_PINS)"
    "$PY" -m pip install -q $TORCH_PINS
  fi
  say "installing the project's dependencies"
  "$PY" -m pip install -q -r requirements-dev.txt
}

find_comfyui() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    [ -f "$COMFYUI_PATH/comfy/model_management.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout" >&2; exit 2; }
    return
  fi
  if [ ! -f .comfyui/comfy/model_management.py ]; then
    say "fetching ComfyUI ${COMFYUI_COMMIT:0:7} into .comfyui"
    rm -rf .comfyui.tmp && mkdir .comfyui.tmp
    if git -C .comfyui.tmp init -q && GIT_TERMINAL_PROMPT=0 timeout 300 git -C .comfyui.tmp fetch -q --depth 1 "$COMFYUI_REPO" "$COMFYUI_COMMIT" \
       && git -C .comfyui.tmp checkout -q FETCH_HEAD; then
      mv .comfyui.tmp .comfyui
    else
      rm -rf .comfyui.tmp
      echo "ComfyUI could not be fetched (offline?). Set COMFYUI_PATH to a ComfyUI checkout to run the ComfyUI parts;" \
           "the ComfyUI tests will skip." >&2
      return
    fi
  fi
  export COMFYUI_PATH="$PWD/.comfyui"
}

install_comfyui_requirements() {
  [ -n "${COMFYUI_PATH:-}" ] || return 0
  say "installing ComfyUI's requirements from $COMFYUI_PATH"
  "$PY" -m pip install -q -r "$COMFYUI_PATH/requirements.txt"
}

cmd=${1:-}
case "$cmd" in
  demo)
    setup_venv; find_comfyui; install_comfyui_requirements
    say "demo"
    exec "$PY" -m optimizer.demo "${@:2}" ;;
  optimize)
    setup_venv; find_comfyui; install_comfyui_requirements
    say "optimizer on the tiny FLUX preset"
    exec "$PY" -m optimizer.run --model tiny-flux "${@:2}" ;;
  test)
    setup_venv; find_comfyui; install_comfyui_requirements
    say "Python tests${COMFYUI_PATH:+ (ComfyUI at $COMFYUI_PATH)}"
    "$PY" -m pytest "${@:2}"
    if command -v node >/dev/null && [ -d tests/js ]; then
      say "JavaScript tests"
      node --test tests/js/
    fi ;;
  *)
    echo "usage: scripts/dev.sh demo|test|optimize [args...]" >&2; exit 2 ;;
esac
