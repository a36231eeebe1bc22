#!/usr/bin/env bash
# Set-up and entry points for a fresh machine: `scripts/dev.sh demo|test|optimize` (the Makefile calls these).
#
# Creates .venv with PyTorch and the project's dependencies and finds ComfyUI:
#   COMFYUI_PATH if set; else the ComfyUI work trees in ../shared/comfyui/ (each copied, since that folder may
#   be read-only); else a pinned ComfyUI cloned into .comfyui/.
# Each ComfyUI version gets its own small venv layered on .venv (it sees .venv's packages through a .pth file
# and installs that version's requirements.txt on top), so versions with conflicting pins (frontend packages)
# run side by side. `test` runs the whole suite against every ComfyUI found, in parallel, and prints each
# version's counts; without any ComfyUI (offline, no ../shared) the ComfyUI tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."

COMFYUI_REPO=${COMFYUI_REPO:-https://github.com/comfyanonymous/ComfyUI}
COMFYUI_COMMIT=aa9d2fc713664e9ffe37763f4c9240c0c3eda667   # v0.20.1, 2026-05-10: the newest release tested
SHARED_COMFYUI=${SHARED_COMFYUI:-../shared/comfyui}
TORCH_PINS=${TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
PY=.venv/bin/python

say() { printf '\n== %s\n' "$*" >&2; }
# pip, without the lines some machines print for every package about local index folders they lack
pip_install() {
  local log status=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" >&2 || true
  rm -f "$log"
  return $status
}

setup_venv() {
  if [ ! -x "$PY" ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    say "installing PyTorch ($TORCH_PINS)"
    pip_install "$PY" -m pip install -q $TORCH_PINS
  fi
  say "installing the project's dependencies"
  pip_install "$PY" -m pip install -q -r requirements-dev.txt
}

# A venv for one ComfyUI tree: .venv's packages plus the tree's own requirements.txt.
comfyui_venv() {  # $1: ComfyUI tree, $2: venv folder
  local tree=$1 venv=$2
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -c "import site; print(site.getsitepackages()[0])" | {
      read -r site; "$PY" -c "import site; print(site.getsitepackages()[0])" > "$site/_ecad_base_venv.pth"; }
  fi
  say "installing $(basename "$tree")'s requirements into $venv"
  pip_install "$venv/bin/python" -m pip install -q -r "$tree/requirements.txt"
  "$venv/bin/python" -c "import torch, aiohttp, yaml" >/dev/null
}

# Copies of ../shared/comfyui/<version> (read-only in CI) under .comfyui-trees/, refreshed when the source changes.
shared_trees() {
  [ -d "$SHARED_COMFYUI" ] || return 0
  mkdir -p .comfyui-trees
  local src tag stamp
  for src in "$SHARED_COMFYUI"/v*/; do
    [ -f "$src/comfy/model_management.py" ] || continue
    tag=$(basename "$src")
    stamp=$(cat "$src/comfyui_version.py" "$src/requirements.txt" | sha256sum)
    if [ ! -f ".comfyui-trees/$tag/.ecad-stamp" ] || [ "$(cat ".comfyui-trees/$tag/.ecad-stamp")" != "$stamp" ]; then
      rm -rf ".comfyui-trees/$tag" && cp -r "$src" ".comfyui-trees/$tag" && chmod -R u+w ".comfyui-trees/$tag"
      echo "$stamp" > ".comfyui-trees/$tag/.ecad-stamp"
    fi
    echo "$PWD/.comfyui-trees/$tag"
  done
}

fetch_pinned_comfyui() {
  if [ ! -f .comfyui/comfy/model_management.py ]; then
    say "fetching ComfyUI ${COMFYUI_COMMIT:0:7} into .comfyui"
    rm -rf .comfyui.tmp && mkdir .comfyui.tmp
    if git -C .comfyui.tmp init -q && GIT_TERMINAL_PROMPT=0 timeout 300 git -C .comfyui.tmp fetch -q --depth 1 "$COMFYUI_REPO" "$COMFYUI_COMMIT" \
       && git -C .comfyui.tmp checkout -q FETCH_HEAD; then
      mv .comfyui.tmp .comfyui
    else
      rm -rf .comfyui.tmp
      echo "ComfyUI could not be fetched (offline?). Set COMFYUI_PATH to a ComfyUI checkout to run the ComfyUI parts." >&2
      return 1
    fi
  fi
  echo "$PWD/.comfyui"
}

# Every ComfyUI to test against, one path per line.
comfyui_trees() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    [ -f "$COMFYUI_PATH/comfy/model_management.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout" >&2; exit 2; }
    echo "$COMFYUI_PATH"
    return
  fi
  shared_trees
}

# The one ComfyUI the demo and the optimizer use: COMFYUI_PATH, the newest shared tree, or the pinned clone.
main_comfyui() {
  local newest
  newest=$(comfyui_trees | sort -V | tail -n 1)
  [ -n "$newest" ] && { echo "$newest"; return; }
  fetch_pinned_comfyui || true
}

venv_for() { echo ".venv-comfyui-$(basename "$1")"; }

run_with_comfyui() {  # $1: module, rest: arguments
  local tree venv
  tree=$(main_comfyui)
  if [ -z "$tree" ]; then
    COMFYUI_PATH= exec "$PY" -m "$@"
  fi
  venv=$(venv_for "$tree")
  comfyui_venv "$tree" "$venv"
  COMFYUI_PATH=$tree exec "$venv/bin/python" -m "$@"
}

run_tests() {
  local trees tree venv tag status=0
  mkdir -p test-output
  mapfile -t trees < <(comfyui_trees)
  if [ ${#trees[@]} -eq 0 ]; then
    say "Python tests (no ComfyUI: its tests skip)"
    COMFYUI_PATH= "$PY" -m pytest "$@" || status=$?
  else
    for tree in "${trees[@]}"; do comfyui_venv "$tree" "$(venv_for "$tree")"; done
    say "Python tests against ${#trees[@]} ComfyUI version(s), in parallel: logs in test-output/"
    local pids=()
    for tree in "${trees[@]}"; do
      tag=$(basename "$tree")
      venv=$(venv_for "$tree")
      ( COMFYUI_PATH=$tree OMP_NUM_THREADS=1 "$venv/bin/python" -m pytest -p no:cacheprovider --junitxml="test-output/$tag.xml" "$@" \
          > "test-output/$tag.log" 2>&1 ) &
      pids+=($!)
    done
    local i=0
    for tree in "${trees[@]}"; do
      tag=$(basename "$tree")
      if wait "${pids[$i]}"; then result=passed; else result=FAILED; status=1; fi
      say "ComfyUI $tag: $result"
      grep -E "^(FAILED|ERROR) |^SKIPPED \[" "test-output/$tag.log" | head -n 60 >&2 || true
      tail -n 1 "test-output/$tag.log" >&2
      i=$((i + 1))
    done
  fi
  if command -v node >/dev/null && [ -d tests/js ]; then
    say "JavaScript tests"
    node --test tests/js/ || status=1
  fi
  return $status
}

cmd=${1:-}
case "$cmd" in
  demo)
    setup_venv
    say "demo"
    run_with_comfyui optimizer.demo "${@:2}" ;;
  optimize)
    setup_venv
    say "optimizer on the tiny FLUX preset"
    run_with_comfyui optimizer.run --model tiny-flux "${@:2}" ;;
  test)
    setup_venv
    run_tests "${@:2}" ;;
  *)
    echo "usage: scripts/dev.sh demo|test|optimize [args...]" >&2; exit 2 ;;
esac
