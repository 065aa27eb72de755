#!/usr/bin/env bash
# The main job: set up, then run robopolicy's quickstart (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/robopolicy quickstart "$@"
