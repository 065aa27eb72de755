"""The fast reactive layer at run time: corrects planned actions with the newest observation (design and training:
robopolicy/deploy/reactive.py). Runs `reactive.onnx` of an artifact directory with onnxruntime; no policy code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REACTIVE_FILES = ("reactive.onnx", "reactive.json")
REACTIVE_INPUTS = ("plan", "obs0", "obs_new", "k", "m")


class ReactiveLayer:
    """`correct(plan, k, obs0, obs_new, m)`: the planned actions (N, Da) at k control periods after the chunk's
    observation, corrected with the observation m periods after it."""

    def __init__(self, directory: Path | str):
        import onnxruntime

        onnx_file, meta_file = (Path(directory) / name for name in REACTIVE_FILES)
        if not onnx_file.is_file() or not meta_file.is_file():
            raise FileNotFoundError(f"{directory} has no reactive layer ({', '.join(REACTIVE_FILES)}): fit one with "
                                    f"`robopolicy reactive CHECKPOINT artifact={directory}`")
        self.meta = json.loads(meta_file.read_text())
        self.keys: list[str] = self.meta["keys"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # a few rows: threads would only cost
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])

    def observation(self, window: Mapping[str, np.ndarray]) -> np.ndarray:
        """(F,): the layer's keys at the window's latest step, concatenated."""
        return np.concatenate([np.asarray(window[key][-1], dtype=np.float32).ravel() for key in self.keys])

    def correct(self, plan: np.ndarray, k: np.ndarray, obs0: np.ndarray, obs_new: np.ndarray, m: float) -> np.ndarray:
        rows = len(plan)
        inputs = {"plan": np.asarray(plan, np.float32), "obs0": np.tile(obs0, (rows, 1)).astype(np.float32),
                  "obs_new": np.tile(obs_new, (rows, 1)).astype(np.float32),
                  "k": np.asarray(k, np.float32).reshape(rows, 1), "m": np.full((rows, 1), m, np.float32)}
        return self.session.run(None, inputs)[0]
