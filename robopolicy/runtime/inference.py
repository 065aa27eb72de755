"""Running an artifact on aligned observation windows, in the caller's thread or in a worker thread.

`ArtifactRunner` turns a store-layout window (what `ObservationAligner.window` gives) into the
artifact's inputs (policy layout plus seeded initial noise, and the byte tokens of the current
instruction for a policy told its task in words) and returns the raw-unit chunk.
`InferenceWorker` runs one request at a time in a background thread, so the control loop keeps
ticking while the policy thinks; torch releases the GIL inside its kernels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from robopolicy.datasets.layout import policy_layout_array
from robopolicy.datasets.text import instruction_tokens
from robopolicy.runtime.alignment import DEFAULT_INTERPOLATION, KeySpec
from robopolicy.runtime.artifact import (
    NOISE_INPUT,
    PREFIX_INPUT,
    PREFIX_MASK_INPUT,
    ArtifactBase,
)

log = logging.getLogger(__name__)


def key_specs(artifact: ArtifactBase, interpolation: Mapping[str, str] | None = None) -> list[KeySpec]:
    """The aligner's keys from the artifact's inputs; `interpolation` overrides per input name (e.g. slerp)."""
    chosen = dict(interpolation or {})
    specs = []
    for spec in artifact.obs_inputs:
        if spec["type"] == "text":  # the instruction is set on the runner, not aligned in time
            continue
        method = chosen.pop(spec["name"], DEFAULT_INTERPOLATION.get(spec["type"], "nearest"))
        specs.append(KeySpec(spec["name"], spec["source"], tuple(spec["step_offsets"]), method,
                             tuple(spec["dims"]) if spec.get("dims") else None))
    if chosen:
        raise ValueError(f"interpolation given for {sorted(chosen)}, which are not inputs of the artifact")
    return specs


class ArtifactRunner:
    """Window (store layout) -> raw-unit chunk (horizon, Da), with noise from a seeded generator."""

    def __init__(self, artifact: ArtifactBase, seed: int = 0):
        self.artifact = artifact
        self.types = {s["name"]: s["type"] for s in artifact.meta["inputs"]}
        self.rng = np.random.default_rng(seed)
        self.text_inputs = artifact.text_inputs
        self.instruction: str | None = None
        self._tokens: dict[str, np.ndarray] = {}

    def set_instruction(self, text: str) -> None:
        """What a policy told its task in words is told from now on. An instruction the training data never had is
        logged (the policy may not follow it), and refused by an artifact that knows only its training
        instructions (a pretrained text encoder's table); one too long for the input is refused."""
        problem = self.artifact.check_instruction(text)
        tokens = {spec["name"]: instruction_tokens([text], spec["shape"][-1]).astype(np.float32)
                  for spec in self.text_inputs}
        if problem:
            log.warning(problem)
        self._tokens, self.instruction = tokens, text

    def __call__(self, window: Mapping[str, np.ndarray], prefix: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The chunk for `window`; `prefix` = (actions (horizon, Da), mask (horizon,)) holds rows (inpainting)."""
        inputs = {}
        for name, values in window.items():
            kind = self.types[name]
            squeeze = kind == "depth" and values.ndim == 4
            inputs[name] = np.ascontiguousarray(policy_layout_array(values[None], kind, 255.0, squeeze))
        if self.text_inputs and self.instruction is None:
            raise ValueError(f"{self.artifact.directory} is told its task in words: give it an instruction "
                             "(instruction=\"...\", or on the topic the robot's topic map names for it)")
        inputs.update({name: tokens[None] for name, tokens in self._tokens.items()})
        if self.artifact.takes_noise:
            inputs[NOISE_INPUT] = self.rng.standard_normal((1, *self.artifact.noise_shape)).astype(np.float32)
        if prefix is not None:
            if not self.artifact.takes_prefix:
                raise ValueError(f"artifact {self.artifact.directory} cannot inpaint (no prefix input): "
                                 "only diffusion and flow artifacts can; use another blending rule")
            inputs[PREFIX_INPUT] = np.asarray(prefix[0], np.float32)[None]
            inputs[PREFIX_MASK_INPUT] = np.asarray(prefix[1], np.float32)[None]
        return self.artifact.run(inputs)[0]


@dataclass
class InferenceResult:
    chunk: np.ndarray
    t_obs: float  # capture time of the window's newest step
    started: float
    finished: float
    held_until: float | None = None  # execution time of the last chunk row held by inpainting


class InferenceWorker:
    """One background thread that runs `runner` on submitted windows, one at a time."""

    def __init__(self, runner: ArtifactRunner, clock):
        self.runner = runner
        self.clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: InferenceResult | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, window: Mapping[str, np.ndarray], t_obs: float,
               prefix: tuple[np.ndarray, np.ndarray] | None = None, held_until: float | None = None) -> None:
        if self.busy:
            raise RuntimeError("an inference is already running")
        self._thread = threading.Thread(target=self._run, args=(window, t_obs, prefix, held_until), daemon=True,
                                        name="inference")
        self._thread.start()

    def _run(self, window: Mapping[str, np.ndarray], t_obs: float, prefix: tuple[np.ndarray, np.ndarray] | None,
             held_until: float | None) -> None:
        started = self.clock()
        try:
            chunk = self.runner(window, prefix)
        except BaseException as error:  # handed to the control loop, which stops the robot
            with self._lock:
                self._error = error
            return
        with self._lock:
            self._result = InferenceResult(chunk, t_obs, started, self.clock(), held_until)

    def take(self) -> InferenceResult | None:
        """The finished result, once; re-raises an inference error in the caller's thread."""
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            result, self._result = self._result, None
        return result

    def wait(self, timeout: float) -> InferenceResult | None:
        """Block until the running inference finishes (or `timeout`), then take its result."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.take()


def measure_latency(runner: ArtifactRunner, window: Mapping[str, np.ndarray], repeats: int = 5,
                    warmup: int = 3) -> list[float]:
    """Seconds per call on a real window, after warm-up calls (TorchScript optimizes on its first calls)."""
    for _ in range(warmup):
        runner(window)
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(window)
        durations.append(time.perf_counter() - start)
    return durations
