"""Load and run an exported policy artifact with torch or onnxruntime only (no training or policy code).

An artifact directory holds `meta.json` and one program file. The program maps the inputs
listed in meta["inputs"] (float32, policy layout: per obs key (B, T_k, ...), images in
[0, 1] channels first; then the initial noise (B, horizon, Da) for diffusion and flow) to the
raw-unit action chunk (B, horizon, Da) whose row meta["action_start"] is the current step.
Diffusion and flow artifacts also take `prefix` (B, horizon, Da) raw actions and `prefix_mask`
(B, horizon): rows with mask 1 are held at the prefix while sampling (inpainting); `run` passes
zeros (no row held) when they are not given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

ARTIFACT_VERSION = 1
FORMATS = ("torchscript", "onnx")
MODEL_FILES = {"torchscript": "policy.pt", "onnx": "policy.onnx"}
NOISE_INPUT = "noise"
PREFIX_INPUT, PREFIX_MASK_INPUT = "prefix", "prefix_mask"
SAMPLING_INPUTS = (NOISE_INPUT, PREFIX_INPUT, PREFIX_MASK_INPUT)


class Artifact:
    """An exported policy: `run(inputs)` -> chunk, `meta` as written by `robopolicy export`."""

    def __init__(self, directory: Path, meta: dict[str, Any]):
        self.directory = directory
        self.meta = meta
        self.input_names = [spec["name"] for spec in meta["inputs"]]
        self.takes_noise = NOISE_INPUT in self.input_names
        self.takes_prefix = PREFIX_INPUT in self.input_names
        self.obs_inputs = [spec for spec in meta["inputs"] if spec["name"] not in SAMPLING_INPUTS]
        path = directory / meta["file"]
        if meta["format"] == "torchscript":
            self._program = torch.jit.load(str(path), map_location="cpu").eval()
            self._session = None
        else:
            import onnxruntime

            self._program = None
            self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    @property
    def noise_shape(self) -> tuple[int, int]:
        """(horizon, Da) of one row of initial noise."""
        return self.meta["horizon"], self.meta["output"]["shape"][-1]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """{input name: float32 array (B, ...)} -> raw-unit chunk (B, horizon, Da) as float32 numpy."""
        if self.takes_prefix and PREFIX_INPUT not in inputs:
            batch = len(inputs[self.obs_inputs[0]["name"]])
            horizon, action_dim = self.noise_shape
            inputs = {**inputs, PREFIX_INPUT: np.zeros((batch, horizon, action_dim), np.float32),
                      PREFIX_MASK_INPUT: np.zeros((batch, horizon), np.float32)}
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise KeyError(f"artifact {self.directory} needs inputs {missing} (it takes {self.input_names})")
        arrays = [np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names]
        for spec, array in zip(self.meta["inputs"], arrays, strict=True):
            if list(array.shape[1:]) != spec["shape"]:
                raise ValueError(f"input {spec['name']!r} must be (B, {', '.join(map(str, spec['shape']))}), "
                                 f"got {array.shape}")
        if self._session is not None:
            return self._session.run(None, dict(zip(self.input_names, arrays, strict=True)))[0]
        with torch.inference_mode():
            return self._program(*[torch.from_numpy(a) for a in arrays]).numpy()


def load_artifact(directory: str | Path) -> Artifact:
    """Open an artifact directory written by `robopolicy export`."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} is missing: point at a directory written by `robopolicy export`")
    meta = json.loads(meta_path.read_text())
    if meta.get("artifact_version") != ARTIFACT_VERSION:
        raise ValueError(f"{meta_path}: artifact_version {meta.get('artifact_version')} is not {ARTIFACT_VERSION}; "
                         "re-export the checkpoint with this version of robopolicy")
    if meta.get("format") not in FORMATS:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not one of {FORMATS}")
    return Artifact(directory, meta)


def example_inputs(specs: list[dict[str, Any]], batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random float32 inputs of the listed shapes: images in [0, 1], everything else standard normal."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        shape = (batch_size, *spec["shape"])
        if spec["type"] == "rgb":
            tensors.append(torch.rand(shape, generator=generator))
        elif spec["type"] == PREFIX_MASK_INPUT:
            tensors.append((torch.rand(shape, generator=generator) < 0.4).float())
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)
