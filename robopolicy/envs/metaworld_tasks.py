"""MetaWorld v3's 50 Sawyer tasks under the task-env contract, observed as DP3 observes them.

The protocol is 3D Diffusion Policy's (Ze et al. 2024) MetaWorld setup: goal-observable tasks
with object and goal positions drawn afresh at every reset, camera `corner2` moved to
(0.6, 0.295, 0.8), 128 x 128 renders, 512 farthest-point-sampled points cropped to DP3's box,
200-step episodes, actions from metaworld's scripted policies.

Observations, in store layout (float32 unless said):
- `agent_pos` (9,): DP3's robot state, world metres: the `hand` body position (3), then the
  `rightEndEffector` (3) and `leftEndEffector` (3) fingertip site positions;
- `state` (39,): metaworld's goal-observable observation: hand xyz, gripper opening in [0, 1],
  two object poses (xyz + quaternion, zero-padded), the same 18 values one step earlier,
  and the goal xyz. The scripted experts read it;
- obs_type `image` adds `image` (H, W, 3) uint8; `depth` adds `depth` (H, W) metres; both are
  the camera's own view, row 0 at the top of its image (corner2 is mounted rolled by about
  180 degrees, so the table appears upside down in it);
- obs_type `point_cloud` adds `point_cloud` (n_points, 6): world xyz (m) + rgb in [0, 1],
  back-projected from the camera's depth with its intrinsics (from fovy) and pose, cropped to
  DP3's box and farthest-point sampled. Its rgb is rendered without cast shadows (a quarter of
  the cost on a CPU; xyz is the same either way).

DP3's crop box lives in DP3's own point frame, which is the camera frame (after its
back-projection) turned by a hand-tuned rotation: roughly the world turned 130 degrees about z
with corner2 at the origin. `crop_frame` writes that frame as a fixed affine map of the world,
so the crop is a fixed region: above the table top, within its edges, robot and objects
included. Points are back-projected with the true intrinsics, mapped into that frame, cropped
and farthest-point sampled there (as DP3 does), and returned in world coordinates; they are
the points DP3's pipeline keeps for the same depth image.

Seeding: every reset reseeds metaworld's generator, from which the task draws its object and
goal positions, from gymnasium's `np_random`; so `reset(seed=s)` fixes the episode, and later
resets without a seed continue that stream.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from robopolicy.datasets.pointcloud import sample_point_cloud
from robopolicy.envs.base import Obs
from robopolicy.envs.options import box, choose, positive_int

# DP3's difficulty groups (from Seo et al. 2022), in metaworld v3 names.
EASY_TASKS = (
    "button-press-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-wall-v3",
    "coffee-button-v3", "dial-turn-v3", "door-close-v3", "door-lock-v3", "door-open-v3", "door-unlock-v3",
    "drawer-close-v3", "drawer-open-v3", "faucet-close-v3", "faucet-open-v3", "handle-press-v3",
    "handle-press-side-v3", "handle-pull-v3", "handle-pull-side-v3", "lever-pull-v3", "peg-unplug-side-v3",
    "plate-slide-v3", "plate-slide-back-v3", "plate-slide-back-side-v3", "plate-slide-side-v3", "reach-v3",
    "reach-wall-v3", "window-close-v3", "window-open-v3",
)
MEDIUM_TASKS = (
    "basketball-v3", "bin-picking-v3", "box-close-v3", "coffee-pull-v3", "coffee-push-v3", "hammer-v3",
    "peg-insert-side-v3", "push-wall-v3", "soccer-v3", "sweep-v3", "sweep-into-v3",
)
HARD_TASKS = ("assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3", "push-back-v3")
VERY_HARD_TASKS = ("shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3", "pick-place-wall-v3")
DIFFICULTY = {"easy": EASY_TASKS, "medium": MEDIUM_TASKS, "hard": HARD_TASKS, "very_hard": VERY_HARD_TASKS}
TASKS = tuple(sorted(EASY_TASKS + MEDIUM_TASKS + HARD_TASKS + VERY_HARD_TASKS))

OBS_TYPES = ("lowdim", "image", "depth", "point_cloud")
AGENT_POS_DIM = 9
STATE_DIM = 39
DP3_EPISODE_STEPS = 200
DP3_IMAGE_SIZE = 128
DP3_N_POINTS = 512
# DP3 moves corner2 here (metaworld's own corner2 sits at (1.3, -0.2, 1.1)).
DP3_CAMERA_POSITIONS = {"corner2": (0.6, 0.295, 0.8)}
# DP3's crop: its rotation angles (degrees, about x then y) and box, in the frame of `crop_frame`.
DP3_CROP_ANGLES_DEG = (61.4, -7.0)
DP3_CROP_LOW = (-0.5, -1.5, -0.795)
DP3_CROP_HIGH = (1.0, -0.4, 100.0)
# A free camera for videos: the table from the far right, world up.
VIDEO_VIEW = {"lookat": (0.0, 0.6, 0.15), "distance": 1.6, "azimuth": -60.0, "elevation": -30.0}
# MuJoCo's camera looks down -z with y up; OpenCV's (pointcloud.py's) looks down +z with y down.
_MUJOCO_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def _affine(linear: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """The (4, 4) homogeneous transform p -> linear @ p + translation."""
    transform = np.eye(4)
    transform[:3, :3] = linear
    transform[:3, 3] = translation
    return transform


def _make_sim(task: str):
    """metaworld's goal-observable env for task, drawing new positions from its own generator."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    # seed=0 makes the constructor's own reset restore numpy's global generator afterwards.
    sim = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=0)
    sim._freeze_rand_vec = False  # new object / goal positions at every reset, as DP3 does
    sim.seeded_rand_vec = True  # ... drawn from sim.np_random, which sim.seed() reseeds
    return sim


def camera_intrinsics(model: mujoco.MjModel, camera_id: int, height: int, width: int) -> np.ndarray:
    """Pinhole K (3, 3) of a MuJoCo camera rendered at height x width (fovy is vertical)."""
    focal = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[camera_id]) / 2)
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def camera_to_world(data: mujoco.MjData, camera_id: int) -> np.ndarray:
    """(4, 4) camera-to-world transform in OpenCV's camera convention, from the current pose."""
    rotation = data.cam_xmat[camera_id].reshape(3, 3) @ _MUJOCO_TO_OPENCV
    return _affine(rotation, data.cam_xpos[camera_id])


def _video_camera() -> mujoco.MjvCamera:
    """The free camera of VIDEO_VIEW."""
    view = mujoco.MjvCamera()
    view.type = mujoco.mjtCamera.mjCAMERA_FREE
    view.lookat[:] = VIDEO_VIEW["lookat"]
    view.distance, view.azimuth, view.elevation = (VIDEO_VIEW[k] for k in ("distance", "azimuth", "elevation"))
    return view


def crop_frame(model: mujoco.MjModel) -> np.ndarray:
    """(4, 4) affine map world -> DP3's crop frame, where DP3_CROP_LOW / HIGH apply.

    DP3 back-projects corner2's 128 x 128 depth in OpenCV's camera frame with the principal
    point at (W/2, H/2) in pixel-index units, half a pixel off the true (W-1)/2: its points are
    the true ones sheared, x - e z and y - e z with e = 0.5 / f. It then flips y and z and turns
    them by its rotation T. So q = T F S F R^T (p - c) for corner2's orientation R and DP3's
    position c. The shear tilts DP3's frame by about 0.3 degrees, which is what puts the table
    top below the box's floor; without it the table would stay in the cloud.
    """
    ax, ay = np.deg2rad(DP3_CROP_ANGLES_DEG)
    # DP3's matrices as written there: a rotation about x by -ax, then about y by ay.
    about_x = np.array([[1, 0, 0], [0, np.cos(ax), np.sin(ax)], [0, -np.sin(ax), np.cos(ax)]])
    about_y = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    corner2 = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")
    focal = camera_intrinsics(model, corner2, DP3_IMAGE_SIZE, DP3_IMAGE_SIZE)[1, 1]
    shear = np.eye(3)
    shear[:2, 2] = -0.5 / focal
    world_to_camera = _MUJOCO_TO_OPENCV @ model.cam_mat0[corner2].reshape(3, 3).T
    linear = about_x @ about_y @ _MUJOCO_TO_OPENCV @ shear @ world_to_camera
    return _affine(linear, -linear @ np.array(DP3_CAMERA_POSITIONS["corner2"]))


class MetaWorldTaskEnv(gym.Env):
    """One MetaWorld v3 task with the observations, actions and info of `robopolicy.envs.base`."""

    def __init__(self, task: str, obs_type: str, camera: str, image_size: int, n_points: int,
                 max_steps: int, render_size: int) -> None:
        self.task = task
        self.obs_type = obs_type
        self.image_size = image_size
        self.n_points = n_points
        self.render_size = render_size
        self.render_mode = "rgb_array"
        self.max_episode_steps = max_steps
        self.sim = _make_sim(task)
        self.sim.max_path_length = max_steps  # metaworld refuses steps past it
        model = self.sim.model
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": 1.0 / (self.sim.frame_skip * model.opt.timestep)}
        self.camera_id = self._place_camera(camera)
        self.intrinsics = camera_intrinsics(model, self.camera_id, image_size, image_size)
        self.world_to_crop = crop_frame(model)
        self._crop_to_world = np.linalg.inv(self.world_to_crop).astype(np.float32)
        self._obs_renderer = None if obs_type == "lowdim" else self._renderer(image_size)
        if obs_type == "point_cloud":
            # a cloud's colours are lit without cast shadows: shadow maps are ~80% of an RGB render on a CPU's GL
            # (71 ms -> 14 ms at 128 x 128), they move no point, and DP3's recipe reads xyz alone
            self._obs_renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._video_renderer = None
        self._video_view = _video_camera()
        self.observation_space = self._observation_space()
        self.action_space = box((4,), -1.0, 1.0)

    def _place_camera(self, camera: str) -> int:
        """The camera's id, after moving it to DP3's pose when DP3 moves it."""
        model = self.sim.model
        names = tuple(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam))
        camera_id = names.index(choose("camera", camera, names))
        if camera in DP3_CAMERA_POSITIONS:
            model.cam_pos[camera_id] = DP3_CAMERA_POSITIONS[camera]
            mujoco.mj_forward(model, self.sim.data)
        return camera_id

    def _renderer(self, size: int) -> mujoco.Renderer:
        """An off-screen renderer of size x size, growing the model's buffer when it is smaller."""
        visual = self.sim.model.vis.global_
        visual.offwidth, visual.offheight = max(visual.offwidth, size), max(visual.offheight, size)
        return mujoco.Renderer(self.sim.model, size, size)

    def _observation_space(self) -> spaces.Dict:
        """Box per key with the dtype and shape `_observe` returns for this obs_type."""
        space = {"agent_pos": box((AGENT_POS_DIM,)), "state": box((STATE_DIM,))}
        size = (self.image_size, self.image_size)
        if self.obs_type == "image":
            space["image"] = box((*size, 3), 0, 255, np.uint8)
        if self.obs_type == "depth":
            space["depth"] = box(size, 0.0)
        if self.obs_type == "point_cloud":
            low = np.array([-np.inf] * 3 + [0.0] * 3, dtype=np.float32)
            high = np.array([np.inf] * 3 + [1.0] * 3, dtype=np.float32)
            space["point_cloud"] = spaces.Box(np.tile(low, (self.n_points, 1)),
                                              np.tile(high, (self.n_points, 1)), dtype=np.float32)
        return spaces.Dict(space)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        """Start an episode; object and goal positions follow from seed (or the env's stream)."""
        super().reset(seed=seed)
        self.sim.seed(int(self.np_random.integers(2**31)))  # metaworld draws positions from sim.np_random
        state, _ = self.sim.reset()
        return self._observe(state), {"is_success": False, "score": 0.0}

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict]:
        """Apply one action (dx, dy, dz, grip in [-1, 1]); never terminates, truncates at the horizon."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,):
            raise ValueError(f"action: got shape {a.shape}, expected (4,)")
        state, reward, _, _, info = self.sim.step(a)
        success = bool(info["success"])
        info = {**info, "is_success": success, "score": float(success)}
        truncated = self.sim.curr_path_length >= self.max_episode_steps
        return self._observe(state), float(reward), False, truncated, info

    def hold_action(self, obs: Obs, last: np.ndarray | None) -> np.ndarray:
        """No motion; the gripper as last commanded (open before any command)."""
        return np.array([0.0, 0.0, 0.0, last[-1] if last is not None else -1.0], dtype=np.float32)

    def render(self) -> np.ndarray:
        """Upright frame (render_size, render_size, 3) uint8 of the whole table, for videos."""
        if self._video_renderer is None:
            self._video_renderer = self._renderer(self.render_size)
        self._video_renderer.update_scene(self.sim.data, camera=self._video_view)
        return self._video_renderer.render()

    def close(self) -> None:
        """Free the render contexts and the simulator."""
        for renderer in (self._obs_renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._obs_renderer = self._video_renderer = None
        self.sim.close()

    def agent_pos(self) -> np.ndarray:
        """(9,) hand position, right and left fingertip positions (DP3's robot state)."""
        data = self.sim.data
        parts = (data.body("hand").xpos, data.site("rightEndEffector").xpos, data.site("leftEndEffector").xpos)
        return np.concatenate(parts).astype(np.float32)

    def _observe(self, state: np.ndarray) -> Obs:
        """Store-layout observation: the low-dim keys plus the renders this obs_type needs."""
        obs = {"agent_pos": self.agent_pos(), "state": np.asarray(state, dtype=np.float32)}
        if self.obs_type == "lowdim":
            return obs
        self._obs_renderer.update_scene(self.sim.data, camera=self.camera_id)
        rgb = None if self.obs_type == "depth" else self._obs_renderer.render()
        if self.obs_type == "image":
            obs["image"] = rgb
            return obs
        depth = self._render_depth()
        if self.obs_type == "depth":
            obs["depth"] = depth
        else:
            obs["point_cloud"] = self._point_cloud(depth, rgb)
        return obs

    def _render_depth(self) -> np.ndarray:
        """(H, W) float32 metres along the optical axis (mujoco converts with the model's near / far)."""
        self._obs_renderer.enable_depth_rendering()
        depth = self._obs_renderer.render()
        self._obs_renderer.disable_depth_rendering()
        return depth

    def _point_cloud(self, depth: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """(n_points, 6) world xyz + rgb: back-project into DP3's crop frame, crop, FPS, back to world."""
        to_crop = self.world_to_crop @ camera_to_world(self.sim.data, self.camera_id)
        cloud = sample_point_cloud(depth, self.intrinsics, self.n_points, extrinsics=to_crop, rgb=rgb,
                                   workspace=(DP3_CROP_LOW, DP3_CROP_HIGH))
        cloud[:, :3] = cloud[:, :3] @ self._crop_to_world[:3, :3].T + self._crop_to_world[:3, 3]
        return cloud


class MetaWorldExpert:
    """metaworld's scripted policy for the task: reads the 39-d `state`, adds optional Gaussian noise."""

    def __init__(self, policy: Any, rng: np.random.Generator, noise_std: float = 0.0) -> None:
        self.policy = policy
        self.rng = rng
        self.noise_std = noise_std

    def reset(self, obs: Obs, info: dict[str, Any]) -> None:
        """Nothing to plan: metaworld's policies act on the current state alone."""

    def act(self, obs: Obs, info: dict[str, Any]) -> np.ndarray:
        """(4,) float32 action in [-1, 1]: the policy's, plus N(0, noise_std) on every dimension."""
        with warnings.catch_warnings():  # metaworld warns that gains exceed [-1, 1]; we clip below
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            action = self.policy.get_action(obs["state"].astype(np.float64))
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


# MT10's tasks in words; every other task's instruction is its name (`handle-pull-side-v3`: "handle pull side").
MT10_INSTRUCTIONS = {
    "reach-v3": "reach the goal position", "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal", "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer", "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side", "window-open-v3": "open the window",
    "window-close-v3": "close the window",
}


def instruction(task: str = "reach-v3", **_: Any) -> str:
    """The task's instruction, as a language-conditioned policy is told it (and demos record it)."""
    choose("metaworld task", task, TASKS)
    return MT10_INSTRUCTIONS.get(task) or task.removesuffix("-v3").replace("-", " ")


def make_env(task: str = "reach-v3", obs_type: str = "point_cloud", camera: str = "corner2",
             image_size: int = DP3_IMAGE_SIZE, n_points: int = DP3_N_POINTS, max_steps: int | None = None,
             render_size: int = 256) -> MetaWorldTaskEnv:
    """A MetaWorld v3 task env (DP3's protocol by default); see the module docstring for keys."""
    choose("metaworld task", task, TASKS)
    choose("obs_type", obs_type, OBS_TYPES)
    sizes = {name: positive_int(name, value) for name, value in (
        ("image_size", image_size), ("n_points", n_points), ("render_size", render_size))}
    steps = DP3_EPISODE_STEPS if max_steps is None else positive_int("max_steps", max_steps)
    return MetaWorldTaskEnv(task, obs_type, camera, max_steps=steps, **sizes)


def make_expert(env: gym.Env, rng: np.random.Generator, noise_std: float = 0.0) -> MetaWorldExpert:
    """metaworld's scripted policy for env's task, with optional action noise (std, action units)."""
    from metaworld.policies import ENV_POLICY_MAP

    return MetaWorldExpert(ENV_POLICY_MAP[env.unwrapped.task](), rng, noise_std)
