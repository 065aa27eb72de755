"""`robopolicy deploy ARTIFACT robot=ros robot.map=NAME|PATH`: the bridge node that drives a ROS robot.

The node warms the policy up on the robot's first observations, then waits for an operator:
each std_msgs/Empty on <prefix>/start begins a run, which lasts until <prefix>/stop,
<prefix>/estop, or max_seconds. Every run is appended to the run log and results.json as it
ends. Diagnostics (diagnostic_msgs/DiagnosticArray) go out once a second while a run lasts.
Robot options: map (required), ros (1: rospy and a master; 2: DDS; default 1 where rospy is
installed), namespace (ROS 2), runs (stop after this many; 0: until shut down), node (ROS node
name), max_clock_skew (seconds a stamp may run ahead of this clock), ready_timeout (seconds to
wait for the first observations).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.atomic import write_json_atomic
from robopolicy.ros.bridge import RosBridge, RosOptions, ros_options
from robopolicy.ros.topic_map import load_topic_map
from robopolicy.ros.transport import Transport, open_transport
from robopolicy.runtime.artifact import ArtifactBase
from robopolicy.runtime.loop import RunStats, Runtime, RuntimeConfig, percentiles_ms
from robopolicy.runtime.run_log import RunLog

log = logging.getLogger(__name__)
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass
class BridgeConfig(RosOptions):
    """The `robot.*` options of `deploy robot=ros`."""

    runs: int = 0
    max_clock_skew: float = 0.02
    ready_timeout: float = 60.0


class Diagnostics:
    """Publishes the run's health at most once per `period` seconds: latency, dropped and held counts."""

    def __init__(self, bridge: RosBridge, runtime: Runtime, period: float = 1.0):
        self.bridge, self.runtime, self.period = bridge, runtime, period
        self._publisher = bridge.transport.publisher(bridge.map.diagnostics, "diagnostics")
        self._last = -np.inf

    def tick(self, stats: RunStats) -> None:
        now = self.bridge.now()
        if now - self._last >= self.period:
            self._last = now
            self.publish(stats)

    def publish(self, stats: RunStats) -> None:
        types = self.bridge.transport.types
        last = stats.ticks[-1] if stats.ticks else {}
        held = sum(self.runtime.watchdog.holds.values())
        values = {"ticks": len(stats.ticks), "sent": stats.sent, "dropped": stats.dropped, "held_ticks": held,
                  "late_chunks": stats.late_chunks, "missed_deadlines": stats.missed_deadlines,
                  "observation_age_ms": 1000 * last.get("obs_age", np.nan),
                  "inference_ms_p50": percentiles_ms(np.array(stats.inference_s[-20:] or [np.nan]))["p50"],
                  "tick_jitter_ms_p99": percentiles_ms(np.abs([t["jitter"] for t in stats.ticks[-20:]] or
                                                              [np.nan]))["p99"]}
        status = types.new("diagnostic_status")
        status.name, status.hardware_id = "robopolicy runtime", self.bridge.map.name
        if self.bridge.estop.triggered:
            status.level, status.message = ERROR, self.bridge.estop.reason
        elif self.runtime.watchdog.reason is not None:
            status.level, status.message = WARN, f"holding: {self.runtime.watchdog.reason}"
        else:
            status.level, status.message = OK, "running"
        for key, value in values.items():
            pair = types.new("key_value")
            pair.key, pair.value = key, f"{value:.1f}" if isinstance(value, float) else str(value)
            status.values.append(pair)
        msg = types.new("diagnostics")
        msg.header.stamp = types.time(self.bridge.now())
        msg.status.append(status)
        self._publisher.publish(msg)


def bridge_config(values: Mapping[str, Any]) -> BridgeConfig:
    return ros_options(BridgeConfig, values, "deploy", node="robopolicy_bridge")


def serve_bridge(artifact: ArtifactBase, config: RuntimeConfig, options: BridgeConfig, out: Path,
                 max_seconds: float, transport: Transport | None = None) -> dict[str, Any]:
    """Run the bridge node until `options.runs` runs are done or ROS shuts down; returns the results."""
    topic_map = load_topic_map(options.map)
    topic_map.check_artifact(artifact.meta, f"{artifact.directory} against topic map {options.map}")
    run_log = RunLog(out / "run_log.zarr", {"artifact": str(artifact.directory), "robot": "ros", "map": options.map})
    transport = transport or open_transport(options.ros, options.node, options.namespace)
    bridge = RosBridge(topic_map, transport, max_clock_skew=options.max_clock_skew)
    results: dict[str, Any] = {"artifact": str(artifact.directory), "topic_map": asdict(topic_map),
                               "settings": {"runtime": asdict(config), "bridge": asdict(options)},
                               "run_log": str(out / "run_log.zarr"), "runs": []}
    try:
        bridge.set_state("warming_up")
        runtime = Runtime(artifact, bridge, config, bridge.estop)
        runtime.warm_up(timeout=options.ready_timeout)
        results["settings"]["replan_steps"] = runtime.replan_steps
        diagnostics = Diagnostics(bridge, runtime)
        while not transport.is_shutdown() and (options.runs <= 0 or len(results["runs"]) < options.runs):
            bridge.set_state("estopped" if bridge.halted else "ready")
            if not bridge.start_requested.wait(0.2):
                continue
            bridge.begin_run()
            bridge.set_state("running")
            runtime.reset()
            start = bridge.now()
            stats = runtime.run(max_seconds, until=bridge.stop_requested.is_set, on_tick=diagnostics.tick)
            diagnostics.publish(stats)
            results["runs"].append({"start": start, **stats.summary()})
            run_log.append(stats.ticks)
            write_json_atomic(out / "results.json", results)
            log.info("run %d: %d ticks, %d actions sent, %s", len(results["runs"]), len(stats.ticks), stats.sent,
                     stats.stopped or "stopped by the operator")
    finally:
        bridge.set_state("shutdown")
        bridge.close()
        transport.shutdown("robopolicy bridge done")
    return results
