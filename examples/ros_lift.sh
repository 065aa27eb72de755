#!/usr/bin/env bash
# The Lift policy driven end to end through ROS: the simulated driver node (the arm with 150 ms camera
# latency on the object state, 100 ms actuation latency, 5 ms jitter, 20 Hz) and the bridge node
# (robopolicy deploy robot=ros robot.map=sim_lift, latency matched), each its own process, over ROS 1
# (a roscore on a free port) or ROS 2 (DDS on the loopback interface, a domain id of its own). The
# driver plays the operator: per seed it resets the scene, starts a run on /robopolicy/start, and stops
# it when the task ends.
# Usage: examples/ros_lift.sh [CHECKPOINT] [EPISODES] [ROS]  (default: the quickstart's Lift low-dim policy,
# 24, ROS 1)
# Writes runs/ros{1,2}_lift/{artifact,driver/episodes.json,bridge/results.json,bridge/run_log.zarr} and prints
# one JSON summary: success rate, control-tick jitter, and per chunk the time from the camera capture
# of the newest observation used to the planned execution of its first action, with how far the
# simulated arm's actual execution times were from the planned ones.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint="${1:-runs/quickstart/train/checkpoints/last}"
episodes="${2:-24}"
ros="${3:-1}"
out=runs/ros${ros}_lift
mkdir -p $out
.venv/bin/robopolicy export "$checkpoint" out=$out/artifact overwrite=true > $out/export.json 2> $out/export.log
export MUJOCO_GL=${MUJOCO_GL:-egl}

if [ "$ros" = 1 ]; then
  port=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  export ROS_MASTER_URI=http://127.0.0.1:$port ROS_IP=127.0.0.1 ROS_HOME=$PWD/$out/ros_home
  setsid roscore -p "$port" > $out/roscore.log 2>&1 &
  roscore_pid=$!
  trap 'kill -INT -- -$roscore_pid 2>/dev/null || true' EXIT
  .venv/bin/python -c "
import time, xmlrpc.client
master = xmlrpc.client.ServerProxy('$ROS_MASTER_URI')
for _ in range(300):
    try:
        master.getSystemState('/example'); break
    except OSError:
        time.sleep(0.1)
"
else
  export ROS_DOMAIN_ID=$((100 + $$ % 100))
  export CYCLONEDDS_URI="<CycloneDDS><Domain><General><Interfaces><NetworkInterface name='lo'/></Interfaces></General></Domain></CycloneDDS>"
fi
latency=(latency.camera=0.15 actuation_latency=0.1)
.venv/bin/robopolicy robot sim-driver ros="$ros" map=sim_lift env.name=robosuite env.task=Lift env.obs_type=lowdim \
  env.controller=absolute "${latency[@]}" jitter=0.005 episodes="$episodes" out=$out/driver \
  > /dev/null 2> $out/driver.log &
driver_pid=$!
.venv/bin/robopolicy deploy $out/artifact robot=ros robot.ros="$ros" robot.map=sim_lift robot.runs="$episodes" "${latency[@]}" \
  out=$out/bridge > /dev/null 2> $out/bridge.log
wait $driver_pid

.venv/bin/python - <<EOF
import json
import numpy as np
from robopolicy.datasets.store import EpisodeStore

driver = json.load(open("$out/driver/episodes.json"))
runs = json.load(open("$out/bridge/results.json"))["runs"]
log = EpisodeStore.open("$out/bridge/run_log.zarr")
ticks = {key: log.read(key) for key in ("jitter", "obs_time", "action_time", "work")}
chunk = np.isfinite(ticks["action_time"])
latency = 1000 * (ticks["action_time"][chunk] - ticks["obs_time"][chunk])
errors = [e["executed_abs_error_ms"] for e in driver["episodes"]]
pct = lambda values: {"p50": round(float(np.percentile(values, 50)), 1), "p99": round(float(np.percentile(values, 99)), 1)}
print(json.dumps({
    "episodes": len(driver["episodes"]), "success_rate": round(driver["success_rate"], 3),
    "success_rate_ci95": [round(x, 2) for x in driver["success_rate_ci95"]],
    "tick_jitter_ms": pct(1000 * np.abs(ticks["jitter"])), "tick_work_ms": pct(1000 * ticks["work"]),
    "capture_to_planned_execution_ms": pct(latency),
    "executed_minus_planned_ms_p50_worst_episode": round(max(e["p50"] for e in errors), 1),
    "executed_minus_planned_ms_p99_worst_episode": round(max(e["p99"] for e in errors), 1),
    "inference_ms_p50": round(float(np.median([r["inference_ms"]["p50"] for r in runs])), 1),
    "dropped_per_run": round(float(np.mean([r["dropped"] for r in runs])), 1),
    "late_chunks": sum(r["late_chunks"] for r in runs), "missed_deadlines": sum(r["missed_deadlines"] for r in runs),
    "holds": sum(sum(r["holds"].values()) for r in runs),
    "mean_episode_seconds": round(float(np.mean([e["seconds"] for e in driver["episodes"]])), 2)}))
EOF
