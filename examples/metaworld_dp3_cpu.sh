#!/usr/bin/env bash
# MetaWorld with DP3's protocol on the CPU: per task, 10 scripted demos with point clouds
# (camera corner2, 512 farthest points), a point-cloud diffusion policy (DP3 encoder, horizon 4,
# 2 observations, 3 actions per call) trained for a fixed budget, then 20 evaluation seeds.
# Usage: examples/metaworld_dp3_cpu.sh [minutes per task] [tasks...]
# Writes runs/metaworld_dp3/<task>/{demos.zarr,train/,eval/} and prints one JSON line per task.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"
minutes="${1:-8}"; shift || true
if [ $# -gt 0 ]; then tasks=("$@"); else
  tasks=(button-press-v3 drawer-open-v3 reach-v3 basketball-v3 hammer-v3 sweep-into-v3 pick-place-v3 push-v3 assembly-v3)
fi
for task in "${tasks[@]}"; do
  out=runs/metaworld_dp3/$task
  mkdir -p "$out"
  .venv/bin/robopolicy demos generate env=metaworld task="$task" obs=pointcloud n=10 out="$out/demos.zarr" \
      resume=true > "$out/demos.json" 2> "$out/demos.log"
  if [ ! -e "$out/train/checkpoints/last" ]; then
    .venv/bin/robopolicy train task=metaworld_pointcloud task.env.task="$task" task.dataset.path="$out/demos.zarr" \
        run_dir="$out/train" policy.settings.horizon=4 policy.settings.n_action_steps=3 \
        "policy.settings.backbone.unet.down_dims=[64,128,256]" training.batch_size=64 training.max_steps=3000 \
        training.time_budget_min="$minutes" training.num_workers=0 training.threads=1 training.val_every=500 \
        training.checkpoint_every=3000 > "$out/train.log" 2>&1
  fi
  .venv/bin/robopolicy eval "$out/train/checkpoints/last" n_episodes=20 n_envs=1 n_videos=2 out="$out/eval" \
      > "$out/eval.json.txt" 2> "$out/eval.log"
  python3 -c "import json,sys; d=json.load(open('$out/eval/eval.json')); print(json.dumps({'task': '$task', \
'success_rate': d['success_rate'], 'ci95': d['success_rate_ci95'], 'mean_length': d['mean_episode_length']}))"
done
