"""Every shipped task config with an env section builds its simulator, whose observations feed its policy."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.envs.registry import env_instruction, make_env
from robopolicy.envs.runner import ObsAdapter
from robopolicy.settings import CONFIG_DIR

pytestmark = pytest.mark.sim

TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml") if "env" in yaml.safe_load(p.read_text()))


def test_every_simulated_task_is_covered():
    robosuite = {f"{task}_{obs}" for task in ("lift", "can", "square") for obs in ("lowdim", "image", "pointcloud")}
    assert {"pusht_keypoint", "pusht_image", "metaworld_pointcloud", *robosuite} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_env_observations_reach_the_policy_in_the_shapes_of_shape_meta(task):
    config = yaml.safe_load((CONFIG_DIR / "task" / f"{task}.yaml").read_text())
    meta = parse_shape_meta(config["shape_meta"])
    env = make_env(config["env"])
    try:
        obs, _ = env.reset(seed=0)
        assert env.action_space.shape == meta.action_shape
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), {k: (v.shape, v.dtype) for k, v in obs.items()}
        history = {k: np.stack([v, v])[None] for k, v in obs.items()}  # (B=1, To=2, ...)
        batch = ObsAdapter(meta, n_obs_steps=2)(history, device="cpu")
        assert {k: tuple(v.shape[2:]) for k, v in batch.items()} == {k: s.shape for k, s in meta.obs.items()}
        for key, spec in meta.obs.items():
            if spec.type == "rgb":
                assert 0.0 <= float(batch[key].min()) and float(batch[key].max()) <= 1.0
    finally:
        env.close()


def test_an_env_setting_that_changes_a_shape_is_refused():
    config = yaml.safe_load((CONFIG_DIR / "task" / "lift_pointcloud.yaml").read_text())
    env = make_env({**config["env"], "n_points": 256})
    try:
        obs, _ = env.reset(seed=0)
        history = {k: np.stack([v, v])[None] for k, v in obs.items()}
        with pytest.raises(ValueError, match=r"'point_cloud'.*\(256, 6\).*\(512, 6\).*n_points"):
            ObsAdapter(parse_shape_meta(config["shape_meta"]), n_obs_steps=2)(history, device="cpu")
    finally:
        env.close()


def test_every_env_task_states_its_instruction():
    assert env_instruction({"name": "pusht"}) == "push the T-shaped block onto the target"
    robosuite = [env_instruction({"name": "robosuite", "task": task})
                 for task in ("Lift", "PickPlaceCan", "NutAssemblySquare")]
    assert robosuite[0] == "lift the cube" and len(set(robosuite)) == 3
    assert env_instruction({"name": "metaworld", "task": "drawer-open-v3"}) == "open the drawer"  # MT10's, in words
    assert env_instruction({"name": "metaworld", "task": "handle-pull-side-v3"}) == "handle pull side"  # its name
    with pytest.raises(ValueError, match="metaworld task"):
        env_instruction({"name": "metaworld", "task": "fly-v3"})
