"""The user path in simulation: scripted demos -> a tiny trained checkpoint -> `robopolicy eval`."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.datasets.store import EpisodeStore
from robopolicy.deploy.artifact_policy import evaluate
from robopolicy.envs import runner
from robopolicy.envs.demos import generate_demos
from robopolicy.envs.evaluate import evaluate_checkpoint
from robopolicy.envs.registry import make_env
from robopolicy.settings import parse_overrides
from robopolicy.stats import mean_interval, wilson_interval
from robopolicy.training.run import train

pytestmark = pytest.mark.sim

LIFT = {"name": "robosuite", "task": "Lift", "obs_type": "lowdim", "controller": "absolute"}
TINY = ["policy.settings.backbone.unet.down_dims=[16,32,64]", "policy.settings.backbone.unet.step_embed_dim=16",
        "training.batch_size=8", "training.num_workers=0", "training.log_every=1", "training.val_every=3",
        "training.checkpoint_every=3", "training.val_batches=1", "training.action_error_windows=4",
        "optim.warmup_steps=2", "optim.lr=1e-3", "training.max_steps=3", "task=lift_lowdim"]


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demos") / "lift.zarr"
    assert main(["demos", "generate", "env=lift", "obs=lowdim", "n=3", f"out={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(lift_demos, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train([*TINY, f"task.dataset.path={lift_demos}", "task.dataset.val_ratio=0.34", f"run_dir={run}"])
    return run / "checkpoints" / "last"


def test_generated_demos_are_successful_timestamped_episodes(lift_demos):
    store = EpisodeStore.open(lift_demos)
    assert store.n_episodes == 3 and store.fps == 20.0
    assert {"action", "robot0_eef_pos", "robot0_eef_rot6d", "object", "seed"} <= set(store.keys)
    assert store.read("action").shape[1] == 10
    for index in range(3):
        assert (store.episode(index, ["seed"])["seed"] == index).all()
    times = np.asarray(store.timestamps("action")[: store.episode_lengths[0]])
    np.testing.assert_allclose(np.diff(times), 0.05)


def test_replaying_a_demo_from_its_seed_lifts_the_cube(lift_demos):
    store = EpisodeStore.open(lift_demos)
    episode = store.episode(1, ["seed", "action", "object"])
    env = make_env(LIFT)
    try:
        obs, _ = env.reset(seed=int(episode["seed"][0]))
        np.testing.assert_allclose(obs["object"], episode["object"][0], atol=1e-6)
        for action in episode["action"]:
            obs, _, _, _, info = env.step(action)
        assert info["is_success"] and obs["object"][2] > episode["object"][0, 2] + 0.005
    finally:
        env.close()


def test_demo_generation_resumes_after_the_last_recorded_seed(tmp_path):
    out = tmp_path / "lift.zarr"
    generate_demos(LIFT, out, 1)
    with pytest.raises(FileExistsError, match="resume=true"):
        generate_demos(LIFT, out, 2)
    summary = generate_demos(LIFT, out, 2, resume=True)
    store = EpisodeStore.open(out)
    assert store.n_episodes == 2 and summary["seeds_tried"] == [1, 1]
    assert sorted(set(store.read("seed").tolist())) == [0, 1]
    with pytest.raises(ValueError, match="resume only with the same env"):
        generate_demos({**LIFT, "controller": "delta"}, out, 3, resume=True)


@pytest.mark.slow
def test_eval_on_two_envs_writes_eval_json_plot_and_playable_videos(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", str(tiny_checkpoint), "n_episodes=3", "n_envs=2", "n_videos=1", "max_steps=12", f"out={out}"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "eval.json").read_text())
    assert report["seeds"] == [100000, 100001, 100002] and report["n_episodes"] == 3  # the last wave has an idle env
    assert report["settings"]["n_envs"] == 2 and report["policy_call_ms"]["batch"] == 2
    assert all(e["length"] == 12 for e in report["episodes"] if not e["success"])
    low, high = report["success_rate_ci95"]
    assert low <= report["success_rate"] <= high and printed["eval_json"] == str(out / "eval.json")
    assert (out / "per_seed.png").stat().st_size > 1000
    assert report["videos"] == [str(out / "videos" / "seed_100000.mp4")]
    with av.open(report["videos"][0]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == report["episodes"][0]["length"] + 1 and frames[0].shape == (256, 256, 3)


class RecordedEnvs:
    """The rollout's vector env, recording per episode seed every action chunk sent while the episode ran and the
    last observation frame it ended with."""

    def __init__(self, envs, trace: dict[int, dict]):
        self.envs, self.trace, self.seeds, self.done = envs, trace, [], np.zeros(0, bool)

    def __getattr__(self, name):
        return getattr(self.envs, name)

    def reset(self, *, seed=None, options=None):
        obs, info = self.envs.reset(seed=seed, options=options)
        self.seeds, self.done = list(seed), np.array(info["done"])  # an idle env starts done
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        for row in np.flatnonzero(~self.done):
            episode = self.trace.setdefault(self.seeds[row], {"actions": [], "final": None})
            episode["actions"].append(np.array(actions[row]))
            if info["done"][row]:
                episode["final"] = {key: np.array(value[row, -1]) for key, value in obs.items()}
        self.done = np.array(info["done"])
        return obs, reward, terminated, truncated, info


@pytest.fixture
def traced(monkeypatch):
    """Runs an evaluation; returns its report and, by seed, the episodes' action chunks and final observations."""
    make = runner.make_vector_env

    def run(evaluate_fn, *args):
        trace: dict[int, dict] = {}
        monkeypatch.setattr(runner, "make_vector_env", lambda *a, **k: RecordedEnvs(make(*a, **k), trace))
        return evaluate_fn(*args), trace

    return run


def assert_same_rollouts(first: dict[int, dict], second: dict[int, dict], atol: float) -> None:
    """Per seed: the same number of policy calls, the same action chunks and the same final state."""
    assert sorted(first) == sorted(second)
    for seed, a in first.items():
        b = second[seed]
        assert len(a["actions"]) == len(b["actions"]), f"seed {seed}: {len(a['actions'])} vs {len(b['actions'])} calls"
        gap = np.abs(np.stack(a["actions"]) - np.stack(b["actions"])).max()
        assert gap <= atol, f"seed {seed}: actions differ by up to {gap:.2e}"
        assert a["final"].keys() == b["final"].keys()
        for key in a["final"]:
            np.testing.assert_allclose(a["final"][key], b["final"][key], rtol=0, atol=atol, err_msg=f"seed {seed}: {key}")


def assert_seeds_differ(trace: dict[int, dict], one: int, other: int) -> None:
    """Two seeds start elsewhere and draw other noise: their actions and final states differ (so equality says
    something)."""
    gap = np.abs(np.stack(trace[one]["actions"]) - np.stack(trace[other]["actions"])).max()
    moved = max(np.abs(trace[one]["final"][k] - trace[other]["final"][k]).max() for k in trace[one]["final"])
    assert gap > 0.01 and moved > 0.01, f"seeds {one} and {other}: actions differ by {gap:.2e}, final states {moved:.2e}"


@pytest.mark.slow
def test_an_episode_depends_on_its_seed_not_on_n_envs(tiny_checkpoint, tmp_path, traced):
    (first, one_env), (second, two_envs) = (
        traced(evaluate_checkpoint, tiny_checkpoint, ["n_episodes=3", f"n_envs={n_envs}", "n_videos=0", "max_steps=16",
                                                      f"out={tmp_path / str(n_envs)}"]) for n_envs in (1, 2))
    assert [(e["seed"], e["length"]) for e in first["episodes"]] == [(e["seed"], e["length"]) for e in second["episodes"]]
    # measured: up to 3.6e-5 in actions and 1.0e-5 in final states (float32 sums over a batch of one row or of two,
    # grown over the episode's 2 chunks); a rerun with the same n_envs is bit-identical
    assert_same_rollouts(one_env, two_envs, atol=1e-4)
    assert_seeds_differ(one_env, 100000, 100001)
    assert_seeds_differ(two_envs, 100000, 100002)  # the first rows of the two waves


def test_an_exported_artifact_rolls_out_exactly_as_its_checkpoint(tiny_checkpoint, tmp_path, traced):
    artifact = tmp_path / "artifact"
    assert main(["export", str(tiny_checkpoint), f"out={artifact}"]) == 0
    common = ["n_episodes=2", "n_envs=1", "n_videos=0", "max_steps=16"]
    (first, checkpoint), (second, exported) = (traced(evaluate, path, [*common, f"out={tmp_path / name}"])
                                               for name, path in (("checkpoint", tiny_checkpoint), ("artifact", artifact)))
    assert [e["seed"] for e in first["episodes"]] == [e["seed"] for e in second["episodes"]] == [100000, 100001]
    assert second["env"]["task"] == "Lift"
    # measured: up to 2.6e-5 in actions and 9.4e-6 in final states (the exported graph's float32 kernels)
    assert_same_rollouts(checkpoint, exported, atol=1e-4)
    assert_seeds_differ(exported, 100000, 100001)
    assert not (artifact / "eval").exists()  # out= was given
    with pytest.raises(ValueError, match="apply to checkpoints"):
        evaluate(artifact, [*common, "use_ema=false"])


def test_eval_sampling_overrides_match_an_artifact_exported_with_them(tiny_checkpoint, tmp_path, traced):
    artifact = tmp_path / "artifact"
    assert main(["export", str(tiny_checkpoint), f"out={artifact}", "sampler=dpmsolver++", "num_inference_steps=3"]) == 0
    common = ["n_episodes=1", "n_envs=1", "n_videos=0", "max_steps=16"]
    (_, overridden), (_, exported), (_, default) = (
        traced(evaluate, path, [*common, f"out={tmp_path / name}", *extra])
        for name, path, extra in (("over", tiny_checkpoint, ["sampler=dpmsolver++", "num_inference_steps=3"]),
                                  ("artifact", artifact, []), ("default", tiny_checkpoint, [])))
    assert_same_rollouts(overridden, exported, atol=1e-4)
    gap = np.abs(np.stack(default[100000]["actions"]) - np.stack(overridden[100000]["actions"])).max()
    assert gap > 0.01, f"the checkpoint's own sampler (DDIM, 10 steps) gave the same actions (up to {gap:.2e} apart)"
    with pytest.raises(ValueError, match="sampler must be one of"):
        evaluate_checkpoint(tiny_checkpoint, [*common, f"out={tmp_path / 'bad'}", "sampler=euler"])


@pytest.mark.slow
def test_the_trainer_evaluates_in_simulation_every_epoch(lift_demos, tmp_path):
    run = tmp_path / "run"
    metrics = train([*TINY, f"task.dataset.path={lift_demos}", "task.dataset.val_ratio=0.34", f"run_dir={run}",
                     "training.max_steps=40", "training.eval_every_epochs=1", "training.checkpoint_every=1000",
                     "eval.n_episodes=2", "eval.n_envs=1", "eval.max_steps=8", "eval.n_videos=0",
                     "training.monitor=sim_success_rate", "training.monitor_mode=max"])
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    evals = [row for row in logged if "sim_mean_score" in row]
    reports = [json.loads(path.read_text()) for path in sorted((run / "eval").glob("epoch_*/eval.json"))]
    assert evals and len(evals) == len(reports), (len(evals), len(reports))
    assert all(report["seeds"] == [100000, 100001] for report in reports)
    # the metrics are the last epoch's rollouts: 8 env steps (0.4 s) cannot reach, grasp and lift the cube
    assert metrics["sim_success_rate"] == evals[-1]["sim_success_rate"] == reports[-1]["success_rate"] == 0.0
    assert metrics["sim_mean_score"] == reports[-1]["mean_score"] == 0.0  # Lift's score is its success


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["n_episodes=50", "env.max_steps=400", "out=runs/x", "use_ema=false"]) == {
        "n_episodes": 50, "env": {"max_steps": 400}, "out": "runs/x", "use_ema": False}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["n_episodes"])


def test_score_interval_stays_in_range_and_one_episode_says_nothing():
    assert mean_interval(np.array([0.5])) == (0.0, 1.0)
    low, high = mean_interval(np.array([1.0, 1.0, 0.9, 1.0]))
    assert high == 1.0 and 0.85 < low < 0.975
    # binary scores (success) get the success rate's interval: 50 of 50 is 0.93-1.00, not a point
    assert mean_interval(np.ones(50)) == pytest.approx((0.9287, 1.0), abs=1e-4)


def test_wilson_interval_is_sane_at_the_extremes():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-3)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(1 - high) and 0.2 < low < 0.3
