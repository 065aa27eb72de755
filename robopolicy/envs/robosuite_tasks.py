"""robosuite's Panda tasks (Lift, PickPlaceCan, NutAssemblySquare, LiftConveyor) under the task-env contract.

LiftConveyor is Lift with the cube riding a belt: it starts 20-25 cm upstream (-y) and the belt
carries it along +y at `belt_speed` m/s (a task setting; 0 holds it still) while it rests on the
table and is not grasped, and off the table's far edge (y = 0.4 m) when nobody picks it up. Stale
observations or late actions close the gripper where the cube was: the dynamic task on which latency
matching is measured (bench/latency.py). Its expert picks the cube in 2-2.5 s at 0.05-0.15 m/s; an episode
lasts at most 6 s (120 steps at 20 Hz).

Observations, in store layout (float32 unless said):
- `robot0_eef_pos` (3,): grip-site position in the world frame (m);
- `robot0_eef_quat` (4,): grip-site orientation, x y z w. This is the frame the OSC controller
  tracks and absolute actions target; robosuite's own `robot0_eef_quat` is the hand body's,
  90 degrees about z away, which robosuite documents as a known inconsistency. Its sign
  flips whenever w crosses 0, which a gripper pointing down does all the time;
- `robot0_eef_rot6d` (6,): the same orientation as its matrix's first two columns, continuous,
  so policies condition on this rather than on the quaternion;
- `robot0_gripper_qpos` (2,): finger joint positions;
- `object` (10,): the task object's position (3), quaternion x y z w (4), position minus the
  grip site's (3), read from the simulator (robosuite's own object-state has zeros at reset);
- obs_type `image` adds `agentview_image` and `robot0_eye_in_hand_image` (H, W, 3) uint8;
  `depth` adds to those `agentview_depth` and `robot0_eye_in_hand_depth` (H, W) metres;
  `point_cloud` adds `point_cloud` (n_points, 6): world xyz + rgb in [0, 1], back-projected
  from the task's fixed cameras, cropped to its workspace box and farthest-point sampled; its
  rgb is rendered without mirror reflections (xyz is the same either way).
  Images are upright (robosuite renders them upside down).

Actions go through robosuite's OSC_POSE controller:
- `absolute` (10,): target grip-site position in the world frame (3, clipped to the task's
  workspace box), target rotation as its matrix's first two columns (6, see robopolicy.geometry),
  gripper (1: -1 open .. 1 closed);
- `delta` (7,): robosuite's own input, position / axis-angle deltas in [-1, 1] (scaled by
  0.05 m / 0.5 rad) and the gripper.

Seeding: robosuite draws object placements and the arm's initial-joint noise from one
generator (`env.rng`) that its placement samplers share; `reset(seed=s)` reseeds that
generator in place from gymnasium's `np_random`, so a seed fixes the episode. Object sizes
are drawn once, when the env is built, from a fixed seed, so every instance has the same
objects. The task's scripted experts are at the end of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robopolicy.datasets.pointcloud import (
    crop_workspace,
    depth_to_points,
    farthest_point_sample,
)
from robopolicy.envs.base import Expert, Obs
from robopolicy.envs.options import box, choose, positive_int
from robopolicy.geometry import (
    matrix_to_axis_angle,
    matrix_to_rot6d,
    quat_xyzw_to_matrix,
    rot6d_to_axis_angle,
    rotation_z,
    yaw_of,
)

log = logging.getLogger(__name__)

OBS_TYPES = ("lowdim", "image", "depth", "point_cloud")
CONTROLLERS = ("absolute", "delta")
IMAGE_CAMERAS = ("agentview", "robot0_eye_in_hand")
# Horizons below are in steps at this rate; other control rates scale them to the same seconds.
REFERENCE_HZ = 20
# robosuite builds objects (e.g. Lift's cube size) from its generator at construction.
BUILD_SEED = 0
GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0


@dataclass(frozen=True)
class TaskSpec:
    """What differs between tasks: horizon, object body, workspace box, point-cloud cameras and the instruction."""

    max_episode_steps: int  # evaluation horizon at REFERENCE_HZ
    object_body: str  # the body whose pose is the `object` observation
    workspace_low: tuple[float, float, float]  # world-frame box (m): point-cloud crop and
    workspace_high: tuple[float, float, float]  # absolute-action position limits
    cloud_cameras: tuple[str, ...]  # fixed cameras fused into the point cloud
    instruction: str  # the task in words (what demos record, and a language-conditioned policy is told)
    suite_task: str | None = None  # the robosuite env it is built on, when not its own name


# Boxes: up to 0.4-0.45 m above the table, short of its edges and of the robot base (x = -0.56 for
# Lift / Square, -0.5 for Can). Lift's starts just above the table top (z 0.800-0.805), as DP3 crops
# the table away: otherwise 455 of 512 points are table and the cube gets 14; Can's and Square's
# start 1 cm under it, keeping the surface the objects are placed on.
TASKS = {
    "Lift": TaskSpec(200, "cube_main", (-0.2, -0.2, 0.81), (0.2, 0.2, 1.2), ("agentview",), "lift the cube"),
    "PickPlaceCan": TaskSpec(400, "Can_main", (-0.15, -0.5, 0.79), (0.35, 0.55, 1.25), ("agentview",),
                             "pick up the can and place it in its bin"),
    "NutAssemblySquare": TaskSpec(400, "SquareNut_main", (-0.3, -0.3, 0.81), (0.3, 0.3, 1.25),
                                  ("agentview",), "put the square nut on the square peg"),
    "LiftConveyor": TaskSpec(120, "cube_main", (-0.2, -0.35, 0.81), (0.2, 0.35, 1.2), ("agentview",),
                             "pick the cube off the moving belt", suite_task="Lift"),
}
BELT_TASKS = ("LiftConveyor",)
BELT_START_Y = (-0.25, -0.2)  # m: where the cube is placed on the belt (robosuite's Lift: -0.03 .. 0.03)
BELT_REST = 0.015  # m above its resting height at which the cube has left the belt (it is placed 1 cm up)
DEFAULT_BELT_SPEED = 0.05  # m/s


def _controller_config(controller: str) -> dict[str, Any]:
    """Panda's default OSC_POSE config; absolute targets are taken in the world frame."""
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(robot="Panda")
    if controller == "absolute":
        config["body_parts"]["right"].update(input_type="absolute", input_ref_frame="world")
    return config


def _make_suite_env(task: str, controller: str, control_freq: int):
    """The robosuite env: no on-screen viewer, cameras rendered by us, soft resets."""
    import robosuite

    return robosuite.make(
        task, robots="Panda", controller_configs=_controller_config(controller),
        has_renderer=False, has_offscreen_renderer=True, use_camera_obs=False, use_object_obs=True,
        control_freq=control_freq, ignore_done=True, hard_reset=False, seed=BUILD_SEED,
    )


def _reseed_in_place(generator: np.random.Generator, seed: int) -> None:
    """Restart a generator from seed without replacing it, so every holder of it follows."""
    generator.bit_generator.state = type(generator.bit_generator)(seed).state


def camera_intrinsics(sim: Any, camera: str, size: int) -> np.ndarray:
    """Pinhole K (3, 3) of a square render of a MuJoCo camera, for integer pixel-centre indices.

    The focal length follows from the camera's vertical field of view; the principal point is
    at (size - 1) / 2 because pixel (u, v) covers [u, u + 1). robosuite's camera_utils puts it at
    size / 2, which at 84 px lifts back-projected table points by ~4 mm (1.7 mm with this K).
    """
    fovy = sim.model.cam_fovy[sim.model.camera_name2id(camera)]
    focal = 0.5 * size / np.tan(np.deg2rad(fovy) / 2.0)
    centre = (size - 1) / 2.0
    return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


class RobosuiteTaskEnv(gym.Env):
    """One robosuite task with the observations, actions and info of `robopolicy.envs.base`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": REFERENCE_HZ}

    def __init__(self, task: str, obs_type: str, controller: str, image_size: int, n_points: int,
                 max_steps: int | None, control_freq: int, render_size: int, belt_speed: float = 0.0) -> None:
        self.task = task
        self.task_spec = TASKS[task]
        self.obs_type = obs_type
        self.controller = controller
        self.image_size = image_size
        self.n_points = n_points
        self.render_size = render_size
        self.render_mode = "rgb_array"
        self.metadata = {**self.metadata, "render_fps": control_freq}
        default_steps = round(self.task_spec.max_episode_steps * control_freq / REFERENCE_HZ)
        self.max_episode_steps = max_steps or default_steps
        self.workspace = (np.array(self.task_spec.workspace_low), np.array(self.task_spec.workspace_high))
        self.suite_env = _make_suite_env(self.task_spec.suite_task or task, controller, control_freq)
        self._object_body = self.suite_env.sim.model.body_name2id(self.task_spec.object_body)
        self.belt_velocity = np.array([0.0, belt_speed, 0.0])  # m/s, world frame
        self._belt_on = False
        if task in BELT_TASKS:
            self._install_belt()
        self.observation_space = self._observation_space()
        self.action_space = self._action_space()
        self._steps = 0
        log.info("robosuite %s: obs_type %s, %s actions, %d-step horizon at %d Hz",
                 task, obs_type, controller, self.max_episode_steps, control_freq)

    def _install_belt(self) -> None:
        """Place the cube upstream, make the table and cube frictionless against each other (the belt, not the table,
        moves the cube; the finger pads keep their friction), and set the cube's horizontal velocity to the belt's
        before every physics substep while the belt holds it (robosuite calls `_pre_action` once per substep)."""
        suite_env = self.suite_env
        suite_env.placement_initializer.y_range = list(BELT_START_Y)
        model = suite_env.sim.model
        for geom in ("table_collision", *suite_env.cube.contact_geoms):
            model.geom_friction[model.geom_name2id(geom)] = 0.0
        start, _ = model.get_joint_qvel_addr(suite_env.cube.joints[0])
        horizontal = slice(start, start + 2)
        pre_action = suite_env._pre_action

        def drive(action: np.ndarray, policy_step: bool = False) -> None:
            pre_action(action, policy_step)
            if self._belt_on:
                suite_env.sim.data.qvel[horizontal] = self.belt_velocity[:2]

        suite_env._pre_action = drive

    def _update_belt(self) -> None:
        """The belt carries the cube while it rests on the table and is not grasped (checked once per step)."""
        suite_env = self.suite_env
        rest = suite_env.table_offset[2] - suite_env.cube.bottom_offset[2]  # the cube's centre when on the table
        resting = self.object_pose()[0][2] < rest + BELT_REST
        self._belt_on = resting and not suite_env._check_grasp(gripper=suite_env.robots[0].gripper,
                                                               object_geoms=suite_env.cube)

    def _observation_space(self) -> spaces.Dict:
        """Box per key with the dtype and shape `_observe` returns for this obs_type."""
        space = {"robot0_eef_pos": box((3,)), "robot0_eef_quat": box((4,), -1.0, 1.0),
                 "robot0_eef_rot6d": box((6,), -1.0, 1.0), "robot0_gripper_qpos": box((2,)), "object": box((10,))}
        size = (self.image_size, self.image_size)
        if self.obs_type in ("image", "depth"):
            space.update({f"{cam}_image": box((*size, 3), 0, 255, np.uint8) for cam in IMAGE_CAMERAS})
        if self.obs_type == "depth":
            space.update({f"{cam}_depth": box(size, 0.0) for cam in IMAGE_CAMERAS})
        if self.obs_type == "point_cloud":
            low = np.concatenate([self.workspace[0], np.zeros(3)]).astype(np.float32)
            high = np.concatenate([self.workspace[1], np.ones(3)]).astype(np.float32)
            space["point_cloud"] = spaces.Box(np.tile(low, (self.n_points, 1)),
                                              np.tile(high, (self.n_points, 1)), dtype=np.float32)
        return spaces.Dict(space)

    def _action_space(self) -> spaces.Box:
        """(7,) deltas in [-1, 1], or (10,) workspace position + 6D rotation + gripper."""
        if self.controller == "delta":
            return box((7,), -1.0, 1.0)
        low = np.concatenate([self.workspace[0], -np.ones(7)]).astype(np.float32)
        high = np.concatenate([self.workspace[1], np.ones(7)]).astype(np.float32)
        return spaces.Box(low, high, dtype=np.float32)

    @property
    def sim(self) -> Any:
        """robosuite's MjSim, for privileged reads by experts and tests."""
        return self.suite_env.sim

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        """Start an episode; placements and initial joints follow from seed (or the env's stream)."""
        super().reset(seed=seed)
        _reseed_in_place(self.suite_env.rng, int(self.np_random.integers(2**63)))
        raw = self.suite_env.reset()
        self._steps = 0
        if self.task in BELT_TASKS:
            self._update_belt()
        return self._observe(raw), self._info()

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict]:
        """Apply one action for one control period; never terminates, truncates at the horizon."""
        raw, _, _, _ = self.suite_env.step(self._suite_action(action))
        self._steps += 1
        if self.task in BELT_TASKS:
            self._update_belt()
        info = self._info()
        return self._observe(raw), info["score"], False, self._steps >= self.max_episode_steps, info

    def render(self) -> np.ndarray:
        """Upright agentview frame (render_size, render_size, 3) uint8 for videos."""
        return self._render_camera("agentview", self.render_size, depth=False)[0]

    def close(self) -> None:
        """Free the simulator and its render context."""
        self.suite_env.close()

    def hold_action(self, obs: Obs, last: np.ndarray | None) -> np.ndarray:
        """Stay at the observed grip-site pose (absolute) or still (delta); the gripper as last commanded."""
        gripper = np.asarray(last[-1:] if last is not None else [-1.0], dtype=np.float32)
        if self.controller == "delta":
            return np.concatenate([np.zeros(6, np.float32), gripper])
        return np.concatenate([obs["robot0_eef_pos"], obs["robot0_eef_rot6d"], gripper]).astype(np.float32)

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Privileged: the task object's world position (3,) and rotation matrix (3, 3)."""
        data = self.sim.data
        return (np.array(data.body_xpos[self._object_body]),
                np.array(data.body_xmat[self._object_body]).reshape(3, 3))

    def _suite_action(self, action: np.ndarray) -> np.ndarray:
        """Our action -> robosuite's: absolute 6D rotations become axis-angle, positions clipped."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: got shape {a.shape}, expected {self.action_space.shape} "
                             f"for controller {self.controller!r}")
        if self.controller == "delta":
            return np.clip(a, -1.0, 1.0)
        position = np.clip(a[:3], *self.workspace)
        return np.concatenate([position, rot6d_to_axis_angle(a[3:9]), np.clip(a[9:], -1.0, 1.0)])

    def _info(self) -> dict[str, Any]:
        """is_success from the task's own check, and score = 1.0 when solved."""
        success = bool(self.suite_env._check_success())
        return {"is_success": success, "score": float(success)}

    def _observe(self, raw: dict[str, np.ndarray]) -> Obs:
        """Store-layout observation from robosuite's low-dim dict plus our renders."""
        eef_pos = raw["robot0_eef_pos"]
        object_pos = self.sim.data.body_xpos[self._object_body]
        object_quat = np.roll(self.sim.data.body_xquat[self._object_body], -1)  # w x y z -> x y z w
        obs = {
            "robot0_eef_pos": eef_pos,
            "robot0_eef_quat": raw["robot0_eef_quat_site"],
            "robot0_eef_rot6d": matrix_to_rot6d(quat_xyzw_to_matrix(raw["robot0_eef_quat_site"])),
            "robot0_gripper_qpos": raw["robot0_gripper_qpos"],
            "object": np.concatenate([object_pos, object_quat, object_pos - eef_pos]),
        }
        obs = {key: np.asarray(value, dtype=np.float32) for key, value in obs.items()}
        obs.update(self._camera_obs())
        return obs

    def _camera_obs(self) -> Obs:
        """Only the renders this obs_type needs (rendering dominates step time)."""
        if self.obs_type == "point_cloud":
            return {"point_cloud": self._point_cloud()}
        obs = {}
        if self.obs_type in ("image", "depth"):
            for cam in IMAGE_CAMERAS:
                rgb, depth = self._render_camera(cam, self.image_size, depth=self.obs_type == "depth")
                obs[f"{cam}_image"] = rgb
                if depth is not None:
                    obs[f"{cam}_depth"] = depth
        return obs

    def _render_camera(self, camera: str, size: int, depth: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Upright rgb (size, size, 3) uint8 and, if asked, depth (size, size) float32 metres. The env's own GL context
        is made current first: robosuite renders into whichever is, and closing another env in the process (EGL)
        leaves none, so its depth came back outside [0, 1]."""
        from robosuite.utils.camera_utils import get_real_depth_map

        self.sim._render_context_offscreen.gl_ctx.make_current()
        frames = self.sim.render(camera_name=camera, width=size, height=size, depth=depth)
        if not depth:
            return np.ascontiguousarray(frames[::-1]), None
        rgb, raw_depth = frames
        metres = get_real_depth_map(self.sim, raw_depth[::-1]).astype(np.float32)
        return np.ascontiguousarray(rgb[::-1]), np.ascontiguousarray(metres)

    def _point_cloud(self) -> np.ndarray:
        """(n_points, 6) world xyz + rgb from the task's cameras, cropped and farthest-point sampled."""
        import mujoco
        from robosuite.utils.camera_utils import get_camera_extrinsic_matrix

        # a cloud's colours (and a point-cloud env's video frames, which share the context) are rendered without
        # mirror reflections: they re-render the scene for the reflective table and bins (55 -> 32 ms a step for
        # PickPlaceCan), move no point and change the colours by 0.001
        self.sim._render_context_offscreen.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        clouds = []
        for cam in self.task_spec.cloud_cameras:
            rgb, depth = self._render_camera(cam, self.image_size, depth=True)
            intrinsics = camera_intrinsics(self.sim, cam, self.image_size)
            extrinsics = get_camera_extrinsic_matrix(self.sim, cam)  # camera-to-world, OpenCV axes
            clouds.append(depth_to_points(depth, intrinsics, extrinsics, rgb=rgb))
        points = crop_workspace(np.concatenate(clouds), *self.workspace)
        return farthest_point_sample(points, self.n_points)[1]


def instruction(task: str = "Lift", **_: Any) -> str:
    """The task's instruction, as a language-conditioned policy is told it (and demos record it)."""
    choose("robosuite task", task, tuple(TASKS))
    return TASKS[task].instruction


def make_env(task: str = "Lift", obs_type: str = "lowdim", controller: str = "absolute",
             image_size: int = 84, n_points: int = 512, max_steps: int | None = None,
             control_freq: int = 20, render_size: int = 256, belt_speed: float | None = None) -> RobosuiteTaskEnv:
    """A Panda robosuite task env; see the module docstring for observations and actions. `belt_speed` (m/s,
    default 0.05) is LiftConveyor's."""
    choose("robosuite task", task, tuple(TASKS))
    choose("obs_type", obs_type, OBS_TYPES)
    choose("controller", controller, CONTROLLERS)
    sizes = {name: positive_int(name, value) for name, value in (
        ("image_size", image_size), ("n_points", n_points), ("control_freq", control_freq),
        ("render_size", render_size))}
    steps = None if max_steps is None else positive_int("max_steps", max_steps)
    if belt_speed is not None and task not in BELT_TASKS:
        raise ValueError(f"belt_speed is a setting of {BELT_TASKS}, not of {task!r}")
    speed = DEFAULT_BELT_SPEED if belt_speed is None else belt_speed
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.0 <= speed <= 0.5:
        raise ValueError(f"belt_speed: got {belt_speed!r}, expected metres per second in [0, 0.5]")
    return RobosuiteTaskEnv(task, obs_type, controller, max_steps=steps, belt_speed=float(speed), **sizes)


# ---------------------------------------------------------------- scripted experts

# The grip site pointing straight down with its x axis along world x (yaw 0).
_DOWN = np.diag([1.0, -1.0, -1.0])
_STAY = 10**9  # dwell of a final leg: hold its target until the episode ends
_TURN_SPEED = np.deg2rad(4.0)  # rad per step at which a leg's turn about the vertical is commanded


@dataclass(frozen=True)
class _Leg:
    """One leg of a scripted motion: go to a target with the gripper set, then dwell there."""

    target: Callable[[], np.ndarray]  # world position (3,) of the grip site, read when the leg starts
    gripper: float  # GRIPPER_OPEN or GRIPPER_CLOSED
    tolerance: float = 0.01  # m between grip site and target that counts as arrived
    dwell: int = 0  # steps to stay after arriving
    timeout: int = 40  # steps after the command reaches the target to end the leg, arrived or not
    turn: Callable[[], float] | None = None  # yaw (rad) to turn the grip site through, read when the leg starts
    speed: float = np.inf  # m per step: a cap on the episode's speed, for moves that must be precise
    track: bool = False  # read the target every step (a moving object), not once when the leg starts


class _ScriptedExpert:
    """Drives the grip site through a task's legs at a capped speed with per-episode variation.

    Subclasses give the legs (`_plan`) and the gripper's yaw (`_yaw`); actions come out in the
    env's controller mode. Targets move towards each leg's goal at the episode's speed, a leg's
    turn is commanded at _TURN_SPEED, and a small Gaussian noise is added to every commanded
    position, so demos differ from seed to seed.
    """

    def __init__(self, env: RobosuiteTaskEnv, rng: np.random.Generator) -> None:
        self.env = env
        self.rng = rng
        arm = env.suite_env.robots[0].part_controllers["right"]
        self._delta_scale = np.asarray(arm.output_max, dtype=np.float64)  # delta 1.0 -> m, rad

    def reset(self, obs: Obs, info: dict[str, Any]) -> None:
        """Draw this episode's speed, noise and heights, and plan its legs."""
        self.speed = self.rng.uniform(0.008, 0.016)  # m per step
        self.noise = self.rng.uniform(0.0, 0.003)  # std (m) of the commanded position
        self.command = np.array(obs["robot0_eef_pos"], dtype=np.float64)
        self.rotation = rotation_z(self._yaw(obs) + self.rng.normal(0.0, np.deg2rad(3.0))) @ _DOWN
        self.turn_left = 0.0  # rad of the current leg's turn not yet commanded
        self.legs = self._plan()
        self._start_leg(0)

    def act(self, obs: Obs, info: dict[str, Any]) -> np.ndarray:
        """Advance the commanded pose one step along the current leg; return it as an action."""
        self._update_leg(obs["robot0_eef_pos"])
        if self.legs[self.leg].track:
            self.target = np.asarray(self.legs[self.leg].target(), dtype=np.float64)
        step = self.target - self.command
        distance = np.linalg.norm(step)
        speed = min(self.speed, self.legs[self.leg].speed)
        if distance > speed:
            step *= speed / distance
        self.command = self.command + step
        if self.turn_left:
            turn = float(np.clip(self.turn_left, -_TURN_SPEED, _TURN_SPEED))
            self.rotation = rotation_z(turn) @ self.rotation
            self.turn_left -= turn
        position = self.command + self.rng.normal(0.0, self.noise, 3)
        return self._action(position, self.legs[self.leg].gripper, obs)

    def here(self) -> np.ndarray:
        """The currently commanded position: a leg target that holds still."""
        return self.command.copy()

    def _plan(self) -> list[_Leg]:
        """The episode's legs, with their heights and waits drawn from self.rng."""
        raise NotImplementedError

    def _yaw(self, obs: Obs) -> float:
        """The grip site's heading to start the episode at (legs may turn it); the default keeps the current one."""
        return yaw_of(quat_xyzw_to_matrix(obs["robot0_eef_quat"]))

    def _start_leg(self, index: int) -> None:
        """Begin leg `index`: fix its target, and its turn if it has one, from the current state."""
        leg = self.legs[index]
        self.leg, self.leg_steps, self.arrived_steps = index, 0, 0
        self.target = np.asarray(leg.target(), dtype=np.float64)
        if leg.turn is not None:
            self.turn_left = leg.turn()

    def _update_leg(self, eef_pos: np.ndarray) -> None:
        """Move on to the next leg once this one has arrived (its turn commanded too) and dwelt, or timed out."""
        leg = self.legs[self.leg]
        self.leg_steps += int(np.array_equal(self.command, self.target))
        if np.linalg.norm(eef_pos - self.target) < leg.tolerance and not self.turn_left:
            self.arrived_steps += 1
        done = self.arrived_steps > leg.dwell or self.leg_steps > leg.timeout
        if done and self.leg + 1 < len(self.legs):
            self._start_leg(self.leg + 1)

    def _action(self, position: np.ndarray, gripper: float, obs: Obs) -> np.ndarray:
        """The commanded pose as an absolute (10,) or a delta (7,) action."""
        if self.env.controller == "absolute":
            return np.concatenate([position, matrix_to_rot6d(self.rotation), [gripper]]).astype(np.float32)
        current = quat_xyzw_to_matrix(obs["robot0_eef_quat"])
        turn = matrix_to_axis_angle(self.rotation @ current.T)  # world-frame turn, as OSC applies it
        delta = np.concatenate([position - obs["robot0_eef_pos"], turn]) / self._delta_scale
        return np.concatenate([np.clip(delta, -1.0, 1.0), [gripper]]).astype(np.float32)

    def _object(self) -> np.ndarray:
        """Privileged: the task object's world position now."""
        return self.env.object_pose()[0]


class LiftExpert(_ScriptedExpert):
    """Lift: above the cube, down, close, lift; fingers square to the cube's faces."""

    def _yaw(self, obs: Obs) -> float:
        """The cube face direction (mod 90 degrees) closest to the gripper's current heading."""
        current = super()._yaw(obs)
        cube = yaw_of(self.env.object_pose()[1])
        return current + (cube - current + np.pi / 4) % (np.pi / 2) - np.pi / 4

    def _plan(self) -> list[_Leg]:
        """Above the cube, down to its centre, close, lift 12-20 cm and hold."""
        above = self.rng.uniform(0.05, 0.12)
        grasp = self.rng.uniform(-0.008, 0.0)
        close = int(self.rng.integers(5, 11))
        lift = self.rng.uniform(0.12, 0.2)
        return [
            _Leg(lambda: self._object() + [0.0, 0.0, above], GRIPPER_OPEN, tolerance=0.015),
            _Leg(lambda: self._object() + [0.0, 0.0, grasp], GRIPPER_OPEN, tolerance=0.006, dwell=1),
            _Leg(self.here, GRIPPER_CLOSED, tolerance=np.inf, dwell=close),
            _Leg(lambda: self.here() + [0.0, 0.0, lift], GRIPPER_CLOSED, dwell=_STAY),
        ]


# How far ahead (s) LiftConveyor's expert aims along the belt: the grip site trails its commanded position by about
# this much under OSC, so without the lead it closes behind the cube at speed.
_BELT_LEAD = 0.15


class ConveyorLiftExpert(LiftExpert):
    """LiftConveyor: Lift's legs, but above the cube, down and closing follow the moving cube (aimed ahead of it
    by the belt's motion over _BELT_LEAD, and arrived when the grip site, carried as far, is there), then lift."""

    def _update_leg(self, eef_pos: np.ndarray) -> None:
        lead = self.env.belt_velocity * _BELT_LEAD if self.legs[self.leg].track else 0.0
        super()._update_leg(eef_pos + lead)

    def _plan(self) -> list[_Leg]:
        above = self.rng.uniform(0.05, 0.1)
        grasp = self.rng.uniform(-0.008, 0.0)
        close = int(self.rng.integers(5, 9))
        lift = self.rng.uniform(0.12, 0.2)

        def ahead(height: float) -> Callable[[], np.ndarray]:
            return lambda: self._object() + self.env.belt_velocity * _BELT_LEAD + [0.0, 0.0, height]

        return [
            _Leg(ahead(above), GRIPPER_OPEN, tolerance=0.015, track=True),
            _Leg(ahead(grasp), GRIPPER_OPEN, tolerance=0.008, dwell=1, track=True),
            _Leg(ahead(grasp), GRIPPER_CLOSED, tolerance=np.inf, dwell=close, track=True),
            _Leg(lambda: self.here() + [0.0, 0.0, lift], GRIPPER_CLOSED, dwell=_STAY),
        ]


class PickPlaceCanExpert(_ScriptedExpert):
    """PickPlaceCan: grasp the can from above, carry it over its target bin, lower, release, retreat."""

    def _plan(self) -> list[_Leg]:
        """Grasp, carry at 0.98-1.04 m over the can's bin quadrant, release 10-14 cm up, retreat."""
        suite_env = self.env.suite_env
        goal = np.array(suite_env.target_bin_placements[suite_env.object_id], dtype=np.float64)
        above = self.rng.uniform(0.06, 0.12)
        grasp = self.rng.uniform(0.0, 0.01)
        close = int(self.rng.integers(5, 11))
        carry = self.rng.uniform(0.98, 1.04)  # world z of the carry
        release = goal[2] + self.rng.uniform(0.1, 0.14)  # world z where the gripper opens
        # The can's quadrant and the bin's far corners are at the arm's reach, where it stops 1-3 cm
        # short: aim 2-6 cm nearer the robot (success allows ~10 cm either way), accept 1.2-3 cm.
        goal_xy = goal[:2] + [self.rng.uniform(-0.06, -0.02), self.rng.uniform(-0.05, 0.0)]
        return [
            _Leg(lambda: self._object() + [0.0, 0.0, above], GRIPPER_OPEN, tolerance=0.015),
            _Leg(lambda: self._object() + [0.0, 0.0, grasp], GRIPPER_OPEN, tolerance=0.012, dwell=1,
                 timeout=10),
            _Leg(self.here, GRIPPER_CLOSED, tolerance=np.inf, dwell=close),
            _Leg(lambda: np.array([*self.here()[:2], carry]), GRIPPER_CLOSED, tolerance=0.03),
            _Leg(lambda: np.array([*goal_xy, carry]), GRIPPER_CLOSED, tolerance=0.03, timeout=20),
            _Leg(lambda: np.array([*goal_xy, release]), GRIPPER_CLOSED, tolerance=0.03, timeout=20),
            _Leg(self.here, GRIPPER_OPEN, tolerance=np.inf, dwell=close),
            _Leg(lambda: np.array([*goal_xy, carry]), GRIPPER_OPEN, dwell=_STAY),
        ]


# robosuite's square nut (square-nut.xml) is a 2 cm thick ring, 8.75 cm square with a 4.55 cm square
# hole, and a handle along its body x that sticks out of the ring from 4.4 to 7.9 cm off its centre.
# Its square peg (body peg1, pegs_arena.xml) is a 3.2 cm square post, 20 cm tall, centred on the body:
# the hole takes it with 7 mm to spare each side when the nut is square to it, barely at 45 degrees.
_NUT_GRASP = (0.058, 0.068)  # m off the nut's centre to grasp the handle: the 1.6 cm finger pads clear the ring
_PEG_HALF_HEIGHT = 0.1
_SLOW = 0.004  # m per step down onto the handle and the peg: faster, the arm swerves by up to a centimetre
# Holds of the nut over the peg, (side, heading): the grip site's yaw is the nut's plus `side` (the
# fingers close along the grip site's x, so across the handle), the nut's yaw is `heading`, square to
# the peg. They point the handle back at the robot (grip-site yaw 90 degrees) or to a side (yaw 180):
# pointing past the peg, it puts the grip site out of the arm's reach.
_NUT_HOLDS = ((-np.pi / 2, np.pi), (np.pi / 2, np.pi / 2), (-np.pi / 2, -np.pi / 2))
# Turns of the grip site from its start to the grasp (rad), short of the last joint's limits (about
# -118 and +214 degrees from there) and of half turns.
_GRASP_TURNS = (np.deg2rad(-90.0), np.deg2rad(135.0))


def _wrapped(angle: float) -> float:
    """The angle (rad) brought into [-pi, pi)."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class NutAssemblySquareExpert(_ScriptedExpert):
    """NutAssemblySquare: grasp the nut's handle, carry it turned square over the peg, aim, lower it on, let go."""

    def reset(self, obs: Obs, info: dict[str, Any]) -> None:
        """Choose the episode's hold of the nut, then draw and plan as every expert does."""
        self.grasp_turn, self.heading = self._hold(self._yaw(obs))
        super().reset(obs, info)

    def _hold(self, current: float) -> tuple[float, float]:
        """(grip-site turn to the grasp, nut heading over the peg): the wrist-range hold turning the nut least."""
        nut = self._nut_yaw()
        holds = [(_wrapped(nut + side - current), heading) for side, heading in _NUT_HOLDS]
        reachable = [hold for hold in holds if _GRASP_TURNS[0] <= hold[0] <= _GRASP_TURNS[1]]
        return min(reachable, key=lambda hold: abs(_wrapped(hold[1] - nut)))

    def _plan(self) -> list[_Leg]:
        """Grasp 5.8-6.8 cm out on the handle, carry 5-9 cm over the peg, aim, release 2-4 cm down it, retreat."""
        suite_env = self.env.suite_env
        peg = np.array(suite_env.sim.data.body_xpos[suite_env.peg1_body_id])
        peg_top = peg[2] + _PEG_HALF_HEIGHT
        table = float(suite_env.table_offset[2])
        reach = self.rng.uniform(*_NUT_GRASP)
        above = self.rng.uniform(0.035, 0.06)  # over the table, 1.5-4 cm over the handle, before going down to it
        grasp = self.rng.uniform(0.002, 0.006)  # grip site over the handle's mid-height: fingertips off the table
        close = int(self.rng.integers(6, 11))
        carry = peg_top + self.rng.uniform(0.05, 0.09)  # world z of the grip site, the nut hanging at about it
        settle = int(self.rng.integers(2, 6))
        release = peg_top - self.rng.uniform(0.02, 0.04)  # world z of the nut's centre when the gripper opens
        over_peg = peg[:2] + reach * np.array([np.cos(self.heading), np.sin(self.heading)])
        return [
            _Leg(lambda: [*self._handle(reach)[:2], table + above], GRIPPER_OPEN, tolerance=0.004, dwell=settle,
                 turn=lambda: self.grasp_turn),
            _Leg(lambda: self._handle(reach) + [0.0, 0.0, grasp], GRIPPER_OPEN, tolerance=0.006, dwell=1,
                 timeout=10, speed=_SLOW),
            _Leg(self.here, GRIPPER_CLOSED, tolerance=np.inf, dwell=close),
            _Leg(lambda: [*self.here()[:2], carry], GRIPPER_CLOSED, tolerance=0.03),
            _Leg(lambda: [*over_peg, carry], GRIPPER_CLOSED, dwell=settle,
                 turn=lambda: _wrapped(self.heading - self._nut_yaw())),
            _Leg(lambda: self.here() + [*(peg - self._object())[:2], 0.0], GRIPPER_CLOSED, tolerance=0.004,
                 dwell=settle, timeout=20),
            _Leg(lambda: self.here() + [0.0, 0.0, release - self._object()[2]], GRIPPER_CLOSED, timeout=20,
                 speed=_SLOW),
            _Leg(self.here, GRIPPER_OPEN, tolerance=np.inf, dwell=close),
            _Leg(lambda: [*self.here()[:2], carry], GRIPPER_OPEN, dwell=_STAY),
        ]

    def _nut_yaw(self) -> float:
        """The nut's yaw now: the way its handle points."""
        return yaw_of(self.env.object_pose()[1])

    def _handle(self, reach: float) -> np.ndarray:
        """World position (3,) of the point `reach` m out along the nut's handle."""
        position, rotation = self.env.object_pose()
        return position + rotation[:, 0] * reach


EXPERTS: dict[str, type[_ScriptedExpert]] = {
    "Lift": LiftExpert, "PickPlaceCan": PickPlaceCanExpert, "NutAssemblySquare": NutAssemblySquareExpert,
    "LiftConveyor": ConveyorLiftExpert,
}


def make_expert(env: gym.Env, rng: np.random.Generator) -> Expert:
    """The scripted expert of the env's task, for either controller mode (raises if it has none)."""
    task_env = env.unwrapped
    if not isinstance(task_env, RobosuiteTaskEnv):
        raise TypeError(f"make_expert needs an env from robosuite_tasks.make_env, got {type(task_env).__name__}")
    if task_env.task not in EXPERTS:
        raise NotImplementedError(f"no scripted expert for robosuite task {task_env.task!r}; "
                                  f"experts exist for {sorted(EXPERTS)}")
    return EXPERTS[task_env.task](task_env, rng)
