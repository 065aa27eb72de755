#!/usr/bin/env bash
# robosuite Lift from scripted demos, one observation mode: 100 demos, a diffusion policy
# (U-Net 64/128/256; the task config's encoders) trained for a CPU budget, 24 evaluation seeds.
# Usage: examples/lift_cpu.sh lowdim|image|pointcloud [minutes] [max steps] [training overrides...]
# The image result used: examples/lift_cpu.sh image 60 8000 encoder.image.base_width=16 "encoder.image.crop_shape=[76,76]"
# Writes runs/lift_cpu/<obs>/{demos.zarr,train/,eval/} and prints the evaluation's JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"
obs="$1"; minutes="${2:-20}"; steps="${3:-6000}"
shift $(( $# < 3 ? $# : 3 ))
task="lift_$obs"
out=runs/lift_cpu/$obs
mkdir -p "$out"
.venv/bin/robopolicy demos generate env=lift obs="$obs" n=100 out="$out/demos.zarr" resume=true \
    > "$out/demos.json" 2> "$out/demos.log"
if [ ! -e "$out/train/checkpoints/last" ]; then
  .venv/bin/robopolicy train task="$task" task.dataset.path="$out/demos.zarr" run_dir="$out/train" \
      "policy.settings.backbone.unet.down_dims=[64,128,256]" training.batch_size=64 training.max_steps="$steps" \
      training.time_budget_min="$minutes" training.num_workers=0 training.threads=1 training.val_every=500 \
      training.checkpoint_every="$steps" "$@" > "$out/train.log" 2>&1
fi
.venv/bin/robopolicy eval "$out/train/checkpoints/last" n_episodes=24 n_envs=2 n_videos=4 out="$out/eval" \
    > "$out/eval.txt" 2> "$out/eval.log"
python3 -c "import json; d=json.load(open('$out/eval/eval.json')); print(json.dumps({'obs': '$obs', \
'success_rate': d['success_rate'], 'ci95': d['success_rate_ci95'], 'mean_length': d['mean_episode_length'], \
'policy_call_ms_p50': round(d['policy_call_ms']['p50'], 1)}))"
