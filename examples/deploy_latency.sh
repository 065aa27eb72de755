#!/usr/bin/env bash
# A Lift policy on the simulated arm with real latency: 150 ms on the camera (the object pose a
# perception system would give) and 100 ms actuation, 5 ms jitter, 20 Hz. Latency matching on vs
# off and sync vs async inference, then the blending rules (async, matched), then, unmatched, 400 ms
# camera and 300 ms actuation latency; 24 seeds each.
# Usage: examples/deploy_latency.sh [CHECKPOINT]  (default: the quickstart's Lift low-dim policy)
# Writes runs/deploy_latency/<setting>/{results.json,run_log.zarr}; prints one JSON line per setting
# (jump_mm_per_axis: mean over chunk switches of the largest step of the commanded grip position, per axis).
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint="${1:-runs/quickstart/train/checkpoints/last}"
out=runs/deploy_latency
mkdir -p $out
.venv/bin/robopolicy export "$checkpoint" out=$out/artifact overwrite=true > $out/export.json 2> $out/export.log
common=(episodes=24 latency.camera=0.15 actuation_latency=0.1 jitter=0.005 "sensors.camera=[object]")
run() {
  local name=$1; shift
  .venv/bin/robopolicy deploy $out/artifact "${common[@]}" "$@" out=$out/$name > /dev/null 2> $out/$name.log
  python3 -c "import json, numpy as np; d=json.load(open('$out/$name/results.json')); r=d['runs']; \
print(json.dumps({'setting': '$name', 'success_rate': d['success_rate'], 'ci95': [round(x, 2) for x in d['success_rate_ci95']], \
'dropped_per_episode': round(np.mean([x['dropped'] for x in r]), 1), 'late_chunks': sum(x['late_chunks'] for x in r), \
'missed_deadlines': sum(x['missed_deadlines'] for x in r), \
'jump_mm_per_axis': round(1000 * float(np.mean([x['mean_jump'][:3] for x in r if x['mean_jump']])), 2), \
'inference_ms_p50': round(float(np.median([x['inference_ms']['p50'] for x in r])), 1)}))"
}
for match in true false; do
  for inference in async sync; do
    run "match_${match}_${inference}" match_latency=$match inference=$inference
  done
done
for blending in crossfade ensemble inpaint; do
  run "blend_${blending}" blending=$blending
done
# 400 ms camera and 300 ms actuation latency: this policy's chunks reach 750 ms ahead, less than
# latency plus inference, so with matching on the runtime refuses to start (naming the fix); off, it runs.
run stress_match_false latency.camera=0.4 actuation_latency=0.3 match_latency=false
