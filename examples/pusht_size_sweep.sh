#!/usr/bin/env bash
# How small can the diffusion U-Net be and still learn Push-T keypoints? The protocol of
# examples/pusht_keypoint_cpu_60min.sh (batch 256, 4,000 steps, cosine schedule, one CPU core per
# run) for each given down_dims, then Diffusion Policy's evaluation of every saved checkpoint
# (50 test seeds from 100000, EMA weights) of the checkpoints at 1,500, 2,000, 2,500 and 4,000 steps:
# those the 60-minute run kept for the default size, 128/256/512, so all sizes are compared alike.
# Usage: examples/pusht_size_sweep.sh [down_dims ...]   (default: 32,64,128 64,128,256)
# Writes runs/pusht_size_sweep/<dims>/ and prints one JSON line per checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/pusht_size_sweep
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(32,64,128 64,128,256)
mkdir -p $out
for dims in "${sizes[@]}"; do
  run=$out/${dims//,/_}
  [ -e "$run/checkpoints/last" ] || .venv/bin/robopolicy train policy=diffusion_unet task=pusht_keypoint \
      "policy.settings.backbone.unet.down_dims=[$dims]" training.batch_size=256 training.max_steps=4000 \
      training.num_workers=0 training.threads=1 training.val_every=250 training.checkpoint_every=500 \
      training.val_batches=0 training.top_k=8 run_dir="$run" > "$run.train.log" 2>&1 &
done
wait
for dims in "${sizes[@]}"; do
  run=$out/${dims//,/_}
  for checkpoint in "$run"/checkpoints/step_0000{1500,2000,2500,4000}/; do
    name=$(basename "$checkpoint")
    [ -e "$run/eval/$name/eval.json" ] || .venv/bin/robopolicy eval "$checkpoint" n_episodes=50 n_envs=2 n_videos=0 \
        > /dev/null 2> "$run/eval.$name.log"
    python3 -c "import json; d=json.load(open('$run/eval/$name/eval.json')); \
print(json.dumps({'down_dims': '$dims', 'checkpoint': '$name', 'mean_score': round(d['mean_score'], 3), \
'success_rate': d['success_rate'], 'score_ci95': [round(x, 3) for x in d['mean_score_ci95']], \
'policy_call_ms_p50': round(d['policy_call_ms']['p50'], 1)}))"
  done
done
