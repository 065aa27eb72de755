#!/usr/bin/env bash
# Latency calibration on the simulated Lift arm: inject 0, 50, 100 and 200 ms of actuation latency
# (with 5 ms jitter), estimate it from the arm's motion alone, print one JSON line per latency.
set -euo pipefail
cd "$(dirname "$0")/.."
for latency in 0 0.05 0.1 0.2; do
  .venv/bin/robopolicy robot calibrate env.name=robosuite env.task=Lift actuation_latency=$latency jitter=0.005 \
      seconds=8 2> /dev/null | python3 -c "import json, sys; d=json.load(sys.stdin); \
print(json.dumps({'injected_ms': round(1000 * d['injected']['actuation_latency']), \
'estimated_ms': round(1000 * d['actuation_latency']), 'correlation': round(d['correlation'], 3)}))"
done
