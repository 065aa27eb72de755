"""`robopolicy export`: a checkpoint -> one self-contained artifact directory (ARCHITECTURE.md).

The artifact is a traced program from raw-unit observations (policy layout) and the initial
noise to the raw-unit action chunk (B, horizon, Da): normalization, encoders and every
sampling step are inside it, with the step count fixed at export. It is written as
ONNX (`policy.onnx`, the default: loading it runs no code) or TorchScript (`policy.pt`) next to `meta.json`; `load_artifact`
(robopolicy.runtime.artifact) runs it with torch or onnxruntime only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robopolicy.datasets.layout import obs_offsets
from robopolicy.datasets.normalizer import ABSOLUTE_ACTION
from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.datasets.task import TaskConfig
from robopolicy.datasets.text import instruction_tokens
from robopolicy.latency import call_seconds
from robopolicy.policies.base import Policy
from robopolicy.policies.checkpoint import load_policy, read_config, read_meta
from robopolicy.runtime.artifact import (
    ARTIFACT_VERSION,
    FORMATS,
    MODEL_FILES,
    NOISE_INPUT,
    PREFIX_INPUT,
    PREFIX_MASK_INPUT,
)
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportConfig:
    """`robopolicy export CHECKPOINT key=value ...`."""

    out: str = ""  # the artifact directory to write (required)
    format: str = "onnx"  # onnx | torchscript (runs code when loaded: trusted=true to load) | auto (the faster)
    sampler: str | None = None  # diffusion: ddim | dpmsolver++ (default: the checkpoint's)
    num_inference_steps: int | None = None  # diffusion and flow: steps baked in (default: the checkpoint's)
    control_hz: float | None = None  # default: the task's control_hz, the training store's fps, else the env's rate
    use_ema: bool = True  # export the EMA weights
    overwrite: bool = False  # replace an existing artifact directory

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("export needs out=DIR, the artifact directory to write")
        if self.format not in (*FORMATS, "auto"):
            raise ValueError(f"format must be one of {FORMATS} or auto (the faster of the two, measured), "
                             f"got {self.format!r}")


class ChunkProgram(nn.Module):
    """(obs tensors in `keys` order[, noise]) -> raw-unit chunk (B, horizon, Da): what the artifact runs."""

    def __init__(self, policy: Policy, keys: Sequence[str], sampling: Mapping[str, Any]):
        super().__init__()
        self.policy = policy
        self.keys = list(keys)
        self.sampling = dict(sampling)
        self.takes_noise = policy.takes_noise

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        obs = dict(zip(self.keys, inputs[: len(self.keys)], strict=True))
        if self.takes_noise:
            noise, prefix, prefix_mask = inputs[len(self.keys) :]
            return self.policy.predict_action(obs, noise=noise, prefix=prefix, prefix_mask=prefix_mask,
                                              **self.sampling)["action_pred"]
        return self.policy.predict_action(obs)["action_pred"]


def input_specs(shape_meta: ShapeMeta, n_obs_steps: int, action_dim: int, horizon: int, takes_noise: bool,
                instructions: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The program's inputs in order: each obs key with its steps relative to now, then the noise. A text input
    also lists the training data's `instructions` and whether the program knows only those (`closed`)."""
    specs = []
    for key, spec in shape_meta.obs.items():
        offsets = obs_offsets(spec, n_obs_steps) - (n_obs_steps - 1)
        specs.append({"name": key, "type": spec.type, "source": spec.source, "shape": [len(offsets), *spec.shape],
                      "dims": list(spec.dims) if spec.dims else None, "step_offsets": [int(k) for k in offsets],
                      **(dict(instructions or {}) if spec.type == "text" else {})})
    if takes_noise:
        specs += [{"name": NOISE_INPUT, "type": NOISE_INPUT, "shape": [horizon, action_dim]},
                  {"name": PREFIX_INPUT, "type": PREFIX_INPUT, "shape": [horizon, action_dim]},
                  {"name": PREFIX_MASK_INPUT, "type": PREFIX_MASK_INPUT, "shape": [horizon]}]
    return specs


def control_rate(task: TaskConfig, given: float | None) -> float:
    """Control rate in Hz: given, else the task's control_hz, else the training store's `fps` attribute, else the
    task env's rate."""
    if given is not None:
        return float(given)
    if task.control_hz:
        return float(task.control_hz)
    path = Path(str(task.dataset.path))
    if path.name and path.exists():
        from robopolicy.datasets.store import EpisodeStore

        fps = EpisodeStore.open(path).attrs.get("fps")
        if fps:
            return float(fps)
    if task.env:
        from robopolicy.envs.registry import make_env

        env = make_env(task.env)
        try:
            return float(env.metadata["render_fps"])
        finally:
            env.close()
    raise ValueError("the control rate is unknown: the training store has no 'fps' attribute and the task has no "
                     "env; pass control_hz=HZ")


def training_instructions(policy: Policy, task: TaskConfig) -> dict[str, Any] | None:
    """{instructions, closed} for a policy told its task in words: the training store's distinct instructions, and
    whether the exported program knows only those (a pretrained text encoder, whose tokenizer is looked up in a
    table of them); None for a policy without a text key."""
    if not policy.shape_meta.text_keys:
        return None
    texts = task.dataset.task_names()
    if texts:
        return {"instructions": texts, "closed": policy.fix_instructions(texts)}
    if policy.needs_instruction_table():
        raise ValueError(f"the training store {task.dataset.path} (task.dataset.path) names no instructions here, "
                         "and a policy with a pretrained text encoder exports only the instructions it lists: "
                         "export where the store is")
    return {"instructions": None, "closed": False}


def build_meta(policy: Policy, checkpoint: Path, fmt: str, sampling: Mapping[str, Any], control_hz: float,
               task: TaskConfig, instructions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """meta.json: what the runtime needs to feed the program and time its actions."""
    meta = read_meta(checkpoint)
    settings = policy.config
    return {
        "artifact_version": ARTIFACT_VERSION,
        "format": fmt,
        "file": MODEL_FILES.get(fmt),  # format=auto: set when the faster format is known
        "policy": meta["policy"],
        "task": task.name,
        "env": task.env,  # the simulator `robopolicy eval ARTIFACT` rolls it out in
        "dataset": asdict(task.dataset),  # the store and split `eval ARTIFACT offline=true` reads
        "shape_meta": meta["shape_meta"],
        "inputs": input_specs(policy.shape_meta, settings.n_obs_steps, policy.action_dim, settings.horizon,
                              policy.takes_noise, instructions),
        "output": {"name": "action_pred", "shape": [settings.horizon, policy.action_dim]},
        "horizon": settings.horizon,
        "n_obs_steps": settings.n_obs_steps,
        "n_action_steps": settings.n_action_steps,
        "action_start": settings.action_start,
        "control_hz": control_hz,
        "sampling": dict(sampling),
        "action_frame": action_frame_meta(policy.shape_meta),  # inside the program: it takes and gives absolute poses
        "action_range": action_range(policy),  # the runtime's default bound on what it sends (safety.range_margin)
        **policy.artifact_meta(),
        "latency": {"n_latency_steps": task.dataset.n_latency_steps},
        "source": {"checkpoint": str(checkpoint.resolve()), "step": meta.get("step"), "versions": meta.get("versions")},
    }


def action_frame_meta(shape_meta: ShapeMeta) -> dict[str, Any]:
    """{"frame": "absolute"}, or "relative" with the pose keys and action dimensions it converts (action_frame.py)."""
    frame = shape_meta.action_frame
    return {"frame": "absolute"} if frame is None else {"frame": "relative", **frame.to_dict()}


def action_range(policy: Policy) -> dict[str, list[float]]:
    """{low, high}: each action dim's range in the training data, from the policy's normalizer (absolute actions,
    also for a policy in a relative frame)."""
    normalizer = policy.normalizer
    action = normalizer[ABSOLUTE_ACTION] if ABSOLUTE_ACTION in normalizer else normalizer["action"]
    return {"low": action.min.flatten().tolist(), "high": action.max.flatten().tolist()}


def write_program(program: ChunkProgram, inputs: tuple[torch.Tensor, ...], names: list[str], fmt: str,
                  path: Path) -> None:
    """Trace `program` and save it in `fmt` at `path`."""
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about every Python number the samplers read from a tensor: by design the step
        # count and schedule are fixed at export, and check_parity compares the result on fresh inputs
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(program, inputs, check_trace=False), str(path))
            return
        axes = {name: {0: "batch"} for name in [*names, "action_pred"]}
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # fused transformer layers (ACT) have no ONNX op
        try:
            torch.onnx.export(program, inputs, str(path), input_names=names, output_names=["action_pred"],
                              dynamic_axes=axes, dynamo=False, opset_version=17)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)


def write_fastest(program: ChunkProgram, meta: dict[str, Any], directory: Path, calls: int = 20) -> dict[str, float]:
    """Write the program in every format, time each at batch 1 (median of `calls` runs after warm-up), keep the
    faster in `directory` and set meta's format and file to it; returns {format: median ms}."""
    from robopolicy.runtime.artifact import load_artifact

    inputs = example_inputs(meta["inputs"], 1, seed=0)
    names = [s["name"] for s in meta["inputs"]]
    feed = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
    latency = {}
    for fmt in FORMATS:
        candidate = directory / fmt
        candidate.mkdir()
        write_program(program, inputs, names, fmt, candidate / MODEL_FILES[fmt])
        (candidate / "meta.json").write_text(json.dumps({**meta, "format": fmt, "file": MODEL_FILES[fmt]}))
        artifact = load_artifact(candidate, trusted=True)  # written just now by this process
        latency[fmt] = round(1000 * float(np.median(call_seconds(partial(artifact.run, feed), calls, warmup=1))), 3)
    fastest = min(latency, key=latency.get)
    os.replace(directory / fastest / MODEL_FILES[fastest], directory / MODEL_FILES[fastest])
    for fmt in FORMATS:
        shutil.rmtree(directory / fmt)
    meta.update(format=fastest, file=MODEL_FILES[fastest])
    log.info("format=auto: %s (batch-1 median ms: %s)", fastest, latency)
    return latency


def check_parity(program: ChunkProgram, artifact_dir: Path, batch_size: int = 2, seed: int = 0) -> float:
    """Max abs difference between the artifact and the checkpoint policy on fresh random inputs (batch of 2), in
    normalized action units, relative to the largest action there when that exceeds 1 (random inputs can
    drive actions far out of range)."""
    from robopolicy.runtime.artifact import load_artifact

    artifact = load_artifact(artifact_dir, trusted=True)  # written just now by this process
    inputs = example_inputs(artifact.meta["inputs"], batch_size, seed)
    with torch.no_grad():
        expected = program(*inputs).numpy()
    got = artifact.run({spec["name"]: x.numpy() for spec, x in zip(artifact.meta["inputs"], inputs, strict=True)})
    got, expected = (program.policy.normalizer["action"].normalize(torch.from_numpy(x)) for x in (got, expected))
    return float((got - expected).abs().max() / max(1.0, float(expected.abs().max())))


def export_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Export a checkpoint per `key=value` overrides (out=DIR required); returns meta.json with the parity error."""
    options = build_settings(ExportConfig, parse_overrides(overrides), "export")
    fmt = options.format
    checkpoint, out = Path(checkpoint), Path(str(options.out))
    if out.exists() and not options.overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=true to replace it")
    policy = load_policy(checkpoint, use_ema=options.use_ema)
    policy.prepare_export()
    sampling = policy.export_sampling(options.sampler, options.num_inference_steps)
    task = TaskConfig.from_dict(read_config(checkpoint)["task"], strict=False)
    meta = build_meta(policy, checkpoint, fmt, sampling, control_rate(task, options.control_hz), task,
                      training_instructions(policy, task))
    program = ChunkProgram(policy, list(policy.shape_meta.obs), sampling).eval()
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if fmt == "auto":
            meta["format_latency_ms"] = write_fastest(program, meta, tmp)
        else:
            write_program(program, example_inputs(meta["inputs"], 1, seed=0), [s["name"] for s in meta["inputs"]],
                          fmt, tmp / MODEL_FILES[fmt])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        error = check_parity(program, tmp)
        if error > PARITY_TOLERANCE:
            raise RuntimeError(f"the exported program differs from the checkpoint policy by {error:.2e} (relative) "
                               f"(> {PARITY_TOLERANCE}); the policy has a code path the tracer cannot follow")
        meta["parity_error"] = error
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to %s (%s, parity error %.1e)", checkpoint, out, meta["format"], error)
    return {**meta, "artifact": str(out)}


def example_inputs(specs: list[dict[str, Any]], batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random float32 inputs of the listed shapes: images in [0, 1], text as the byte tokens of the training
    instructions (random printable text where none are listed), everything else standard normal."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        shape = (batch_size, *spec["shape"])
        if spec["type"] == "text":
            tensors.append(example_tokens(spec, batch_size, generator))
        elif spec["type"] == "rgb":
            tensors.append(torch.rand(shape, generator=generator))
        elif spec["type"] == PREFIX_MASK_INPUT:
            tensors.append((torch.rand(shape, generator=generator) < 0.4).float())
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def example_tokens(spec: Mapping[str, Any], batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, L) float byte tokens: the listed instructions in turn, else printable bytes of random lengths."""
    length = spec["shape"][-1]
    texts = spec.get("instructions")
    if texts:
        chosen = [texts[(int(torch.randint(len(texts), (), generator=generator)) + i) % len(texts)]
                  for i in range(batch_size)]
        return torch.from_numpy(instruction_tokens(chosen, length)).float()[:, None]
    tokens = torch.randint(32, 127, (batch_size, 1, length), generator=generator).float()
    used = torch.randint(1, length + 1, (batch_size, 1, 1), generator=generator)
    return torch.where(torch.arange(length) < used, tokens, torch.zeros(()))
