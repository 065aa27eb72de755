#!/usr/bin/env bash
# Diffusion Policy's Push-T protocol on the 60-minute CPU checkpoints of
# examples/pusht_keypoint_cpu_60min.sh: 50 test seeds from 100000, 300 steps, score =
# best clip(coverage / 0.95, 0, 1) of the episode. Every saved checkpoint of both runs is
# evaluated (EMA weights), as Diffusion Policy reports the max and the mean over checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
for run in runs/pusht_keypoint_60min/diffusion_unet runs/pusht_keypoint_60min/flow; do
  mkdir -p "$run/eval"
  for checkpoint in "$run"/checkpoints/step_*/; do
    name=$(basename "$checkpoint")
    .venv/bin/robopolicy eval "$checkpoint" n_episodes=50 n_envs=2 n_videos=2 > /dev/null 2> "$run/eval/$name.log"
    python3 -c "import json; d=json.load(open('$run/eval/$name/eval.json')); \
print(json.dumps({'checkpoint': '$run/checkpoints/$name', 'mean_score': round(d['mean_score'], 3), \
'success_rate': d['success_rate'], 'score_ci95': [round(x, 3) for x in d['mean_score_ci95']]}))"
  done
done
