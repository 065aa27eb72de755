#!/usr/bin/env bash
# Diffusion (CNN) and flow matching on Push-T keypoints from Diffusion Policy's human demos
# (../shared/data), 60 minutes of training each, side by side on one CPU core each.
# Writes runs/pusht_keypoint_60min/{diffusion_unet,flow}/ (checkpoints, train_log.jsonl) and curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/pusht_keypoint_60min
common=(task=pusht_keypoint training.batch_size=256 training.max_steps=4000 training.time_budget_min=60
        training.num_workers=0 training.threads=1 training.val_every=250 training.checkpoint_every=500
        training.val_batches=0)
.venv/bin/robopolicy train policy=diffusion_unet "${common[@]}" run_dir=$out/diffusion_unet > $out.diffusion_unet.log 2>&1 &
.venv/bin/robopolicy train policy=flow "${common[@]}" run_dir=$out/flow > $out.flow.log 2>&1 &
wait
.venv/bin/python examples/plot_training.py $out/diffusion_unet $out/flow --out $out/curves.png
