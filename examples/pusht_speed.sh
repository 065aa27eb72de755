#!/usr/bin/env bash
# Issue 9's speed table on Push-T keypoint (CPU): the teachers of examples/pusht_keypoint_cpu_60min.sh,
# ACT and an adaptive flow trained under the same 60-minute budget, a consistency student distilled
# from the diffusion teacher, then bench/speed.py (latency of every row, and 50-seed Push-T scores).
# Writes runs/pusht_speed/ and docs/results/speed.{json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/pusht_speed
teachers=runs/pusht_keypoint_60min
mkdir -p $out
common=(task=pusht_keypoint training.batch_size=256 training.max_steps=4000 training.time_budget_min=60
        training.num_workers=0 training.threads=1 training.val_every=500 training.checkpoint_every=1000
        training.val_batches=0)
[ -e $teachers/diffusion_unet/checkpoints/last ] || examples/pusht_keypoint_cpu_60min.sh
.venv/bin/robopolicy train policy=act "${common[@]}" run_dir=$out/act > $out/act.log 2>&1 &
.venv/bin/robopolicy train policy=flow policy.settings.adaptive=true policy.label=flow_adaptive "${common[@]}" \
    run_dir=$out/flow_adaptive > $out/flow_adaptive.log 2>&1 &
.venv/bin/robopolicy distill $teachers/diffusion_unet/checkpoints/last training.max_steps=1500 \
    training.time_budget_min=45 training.val_every=250 training.checkpoint_every=250 \
    policy.settings.teacher_steps=16 run_dir=$out/consistency > $out/consistency.log 2>&1
wait
.venv/bin/python -m bench.speed --threads 1 --calls 50 --eval-episodes 50 --eval-dir runs/speed_eval \
    --keypoint diffusion=$teachers/diffusion_unet/checkpoints/last flow=$teachers/flow/checkpoints/last \
    flow_adaptive=$out/flow_adaptive/checkpoints/last consistency=$out/consistency/checkpoints/last \
    act=$out/act/checkpoints/last --out docs/results/speed
