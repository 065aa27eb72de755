"""Where latency matters: success on the conveyor pick (robosuite LiftConveyor) against total latency and belt speed.

    .venv/bin/python -m bench.latency demos              # 50 scripted demos per belt speed, merged into one store
    .venv/bin/python -m bench.latency train FRAME        # FRAME: absolute | relative; the quickstart's recipe
    .venv/bin/python -m bench.latency reactive           # the absolute policy's fast reactive layer
    .venv/bin/python -m bench.latency sweep [--episodes 24]   # every point not yet measured, on the simulated arm
    .venv/bin/python -m bench.latency report             # docs/results/latency.md and latency.png

Every point is `robopolicy deploy ARTIFACT robot=sim` in real time (20 Hz, the simulator in its own process): the
total latency is split evenly between the camera (the cube's pose, whose age sets every observation's, as the
runtime aligns all keys to the newest time every sensor has reached) and actuation, with 5 ms jitter. Settings:
- ideal: no latency injected (the policy still takes its inference time, async);
- unmatched: latency injected, the runtime told none (a naive loop: it executes each chunk from its first action);
- matched: the runtime compensates it (each action sent for the time it was predicted for, late ones dropped);
- matched + relative: the same with a policy trained on relative trajectories (`action.frame: relative`);
- matched + reactive: matched, with the absolute policy's fast reactive layer (`robopolicy reactive`) correcting the
  planned actions with the newest observation at every tick.
A setting where no chunk reaches past the latency is refused by the runtime; the point records its message.
24 seeds (100000 on) per point, Wilson 95% intervals. Each point is written to docs/results/latency/ when done,
so an interrupted sweep continues where it stopped. Training and the sweep run alone on the machine (2 cores):
the runtime is real time, so a busy machine makes inference late and the numbers worse.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "latency"
RESULTS = ROOT / "docs" / "results" / "latency"
STORE = RUNS / "conveyor_lowdim.zarr"
DEMO_SPEEDS = (0.05, 0.1, 0.15)  # m/s: the belt speeds the demos are recorded at
SPEEDS = (0.05, 0.15)  # m/s: the belt speeds the sweep measures
DEMOS_PER_SPEED = 50
TOTAL_MS = (100, 200, 300, 500)
FRAMES = ("absolute", "relative")
# (name, policy frame, runtime matches latency, reactive layer)
SETTINGS = (("unmatched", "absolute", False, False), ("matched", "absolute", True, False),
            ("matched_relative", "relative", True, False), ("matched_reactive", "absolute", True, True))
RECIPE = ("task=conveyor_lowdim", "policy.settings.backbone.unet.down_dims=[64,128,256]", "training.max_steps=6000",
          "training.batch_size=64", "training.num_workers=0", "training.threads=1", "training.log_every=500",
          "training.val_every=1000", "training.checkpoint_every=2000")

log = logging.getLogger(__name__)


def make_demos() -> dict[str, Any]:
    """60 scripted demos at each belt speed, merged (`dataset convert --from zarr`) into STORE."""
    from robopolicy.datasets.convert.run import convert_source
    from robopolicy.datasets.convert.stores import StoresSource
    from robopolicy.envs.demos import generate_demos

    per_speed = RUNS / "demos"
    for speed in DEMO_SPEEDS:
        path = per_speed / f"conveyor_{speed}.zarr"
        env = {"name": "robosuite", "task": "LiftConveyor", "obs_type": "lowdim", "controller": "absolute",
               "belt_speed": speed}
        generate_demos(env, path, DEMOS_PER_SPEED, resume=path.exists())
    return convert_source(StoresSource(per_speed), STORE)


def train(frame: str) -> dict[str, Any]:
    """The quickstart's Lift recipe on the conveyor demos, with actions in `frame`."""
    from robopolicy.training.run import train as run_training

    overrides = [*RECIPE, f"task.dataset.path={STORE}", f"run_dir={RUNS / f'train_{frame}'}"]
    if frame == "relative":
        overrides.append("task.shape_meta.action.frame=relative")
    return run_training(overrides)


def artifact(frame: str) -> Path:
    """The exported policy of `frame` (exported on first use)."""
    from robopolicy.deploy.export import export_checkpoint

    path = RUNS / f"artifact_{frame}"
    if not (path / "meta.json").is_file():
        export_checkpoint(RUNS / f"train_{frame}" / "checkpoints" / "last", [f"out={path}", "overwrite=true"])
    return path


def fit_reactive_layer() -> dict[str, Any]:
    """The fast reactive layer of the absolute policy, written into its artifact."""
    from robopolicy.deploy.reactive import fit_reactive

    return fit_reactive(RUNS / "train_absolute" / "checkpoints" / "last", [f"artifact={artifact('absolute')}",
                                                                          "threads=2"])


def point_file(setting: str, speed: float, total_ms: int) -> Path:
    return RESULTS / f"{setting}_speed{speed}_{total_ms}ms.json"


def measure(setting: str, frame: str, match: bool, reactive: bool, speed: float, total_ms: int,
            episodes: int) -> dict[str, Any]:
    """One point: `episodes` seeds of the conveyor at `speed` with `total_ms` latency, as `setting` runs it."""
    from robopolicy.deploy.session import deploy

    half = total_ms / 2000.0
    overrides = [f"episodes={episodes}", "threads=1", f"env.belt_speed={speed}", f"match_latency={str(match).lower()}",
                 f"reactive={str(reactive).lower()}",
                 "jitter=0.005", "sensors.camera=[object]", f"latency.camera={half}", f"actuation_latency={half}",
                 f"out={RUNS / 'deploy' / point_file(setting, speed, total_ms).stem}"]
    point = {"setting": setting, "frame": frame, "match_latency": match, "reactive": reactive, "belt_speed": speed,
             "total_ms": total_ms,
             "camera_ms": total_ms / 2, "actuation_ms": total_ms / 2, "episodes": episodes}
    try:
        results = deploy(artifact(frame), overrides)
    except ValueError as error:  # the runtime refuses a setting no chunk can cover
        return {**point, "refused": str(error)}
    runs = results["runs"]
    return {**point, "success_rate": results["success_rate"], "ci95": results["success_rate_ci95"],
            "successes": sum(r["success"] for r in runs),
            "dropped_per_episode": float(np.mean([r["dropped"] for r in runs])),
            "late_chunks": int(sum(r["late_chunks"] for r in runs)),
            "inference_ms_p50": float(np.median([r["inference_ms"]["p50"] for r in runs])),
            "settings": results["settings"]}


def sweep(episodes: int) -> None:
    """Every point not yet in RESULTS: the ideal per policy and speed, then each setting at each latency."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    points = []  # the absolute policy's ideal, unmatched and matched first: the comparison the runtime exists for
    for frame, settings in (("absolute", SETTINGS[:2]), ("relative", SETTINGS[2:3]), (None, SETTINGS[3:])):
        points += [(f"ideal_{frame}", frame, True, False, speed, 0) for speed in SPEEDS if frame is not None]
        points += [(*setting, speed, total) for setting in settings for speed in SPEEDS for total in TOTAL_MS]
    for setting, frame, match, reactive, speed, total in points:
        path = point_file(setting, speed, total)
        if path.is_file():
            continue
        result = measure(setting, frame, match, reactive, speed, total, episodes)
        path.write_text(json.dumps(result, indent=1))
        log.info("%s speed %.2f, %d ms: %s", setting, speed, total, result.get("success_rate", result.get("refused")))


def load_points() -> dict[tuple[str, float, int], dict[str, Any]]:
    return {(p["setting"], p["belt_speed"], p["total_ms"]): p
            for p in (json.loads(f.read_text()) for f in sorted(RESULTS.glob("*.json")))}


def cell(point: dict[str, Any] | None) -> str:
    if point is None:
        return "-"
    if "refused" in point:
        return "refused"
    low, high = point["ci95"]
    return f"{point['success_rate']:.2f} ({point['successes']}/{point['episodes']}, {low:.2f}-{high:.2f})"


NOTES = "<!-- notes: written by hand, kept by `report` -->"


def training_summary(frame: str) -> str:
    """Steps and minutes of a policy's training run, from its log."""
    log_file = RUNS / f"train_{frame}" / "train_log.jsonl"
    if not log_file.is_file():
        return f"{frame}: not trained here"
    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    last = [row for row in rows if "train_loss" in row][-1]
    return f"{frame}: {last.get('step')} steps, final train loss {last['train_loss']:.4f}"


def plot(points: dict[tuple[str, float, int], dict[str, Any]], names: list[str], path: Path) -> None:
    """Success against total latency, one panel per belt speed, one line per setting (Wilson 95% bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SPEEDS), figsize=(5 * len(SPEEDS), 4), sharey=True)
    axes = np.atleast_1d(axes)
    for axis, speed in zip(axes, SPEEDS):
        for name in names:
            ideal = points.get((f"ideal_{'relative' if 'relative' in name else 'absolute'}", speed, 0))
            series = [(0, ideal)] + [(total, points.get((name, speed, total))) for total in TOTAL_MS]
            series = [(total, p) for total, p in series if p is not None and "refused" not in p]
            if series:
                y = np.array([p["success_rate"] for _, p in series])
                low, high = np.array([p["ci95"] for _, p in series]).T
                axis.errorbar([t for t, _ in series], y, yerr=np.clip([y - low, high - y], 0, None), marker="o", capsize=3,
                              label=name)
        axis.set(title=f"belt {speed} m/s", xlabel="total latency (ms): camera + actuation", ylim=(-0.05, 1.05))
    axes[0].set_ylabel("success rate")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report() -> str:
    """docs/results/latency.md (how it was measured, the table, the layer's fit) and latency.png; the hand-written
    notes after NOTES are kept."""
    points = load_points()
    names = [name for name, *_ in SETTINGS]
    page = RESULTS.parent / "latency.md"
    notes = page.read_text().partition(NOTES)[2] if page.is_file() else "\n"
    lines = ["# Where latency matters: the conveyor pick against latency and belt speed", "",
             "Written by `python -m bench.latency report` from the points in `docs/results/latency/`; how each was "
             "measured is in the docstring of `bench/latency.py`. Success rate over the seeds (successes / seeds, "
             "Wilson 95% interval); *refused*: the runtime refused to start, no chunk reaching past the latency.", "",
             "| belt speed | total latency | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for speed in SPEEDS:
        ideal = " / ".join(cell(points.get((f"ideal_{frame}", speed, 0))) for frame in FRAMES)
        lines.append(f"| {speed} m/s | 0 ms, ideal (absolute / relative policy) | {ideal} |" + " |" * (len(names) - 1))
        for total in TOTAL_MS:
            lines.append(f"| {speed} m/s | {total} ms | "
                         + " | ".join(cell(points.get((name, speed, total))) for name in names) + " |")
    refused = sorted({p["refused"] for p in points.values() if "refused" in p})
    layer = RUNS / "artifact_absolute" / "reactive.json"
    fit_errors = json.loads(layer.read_text())["errors"] if layer.is_file() else "not fitted here"
    lines += ["", "![success against latency](latency.png)", "",
              "Policies (the quickstart's recipe, 150 demos at 0.05 / 0.1 / 0.15 m/s): "
              + "; ".join(training_summary(frame) for frame in FRAMES) + ".", "",
              f"Reactive layer fit (RMS error against the demos' actions, half-range units): {fit_errors}.", ""]
    lines += [f"Refused: {message}" for message in refused]
    plot(points, names, RESULTS.parent / "latency.png")
    page.write_text("\n".join(lines) + "\n\n" + NOTES + notes)
    return str(page)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("demos", "train", "reactive", "sweep", "report"))
    parser.add_argument("frame", nargs="?", choices=FRAMES, help="train: the policy's action frame")
    parser.add_argument("--episodes", type=int, default=24)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.action == "demos":
        print(json.dumps(make_demos(), indent=1))
    elif args.action == "train":
        if args.frame is None:
            parser.error("train needs FRAME: absolute or relative")
        print(json.dumps(train(args.frame), indent=1))
    elif args.action == "reactive":
        print(json.dumps(fit_reactive_layer()["errors"], indent=1))
    elif args.action == "sweep":
        sweep(args.episodes)
    else:
        print(report())


if __name__ == "__main__":
    main()
