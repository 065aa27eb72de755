"""Load and run an exported policy artifact with torch or onnxruntime only (no training or policy code).

An artifact directory holds `meta.json` and one program file (ONNX by default, and any external
data it names), all inside the directory. Loading ONNX runs no code from the file; loading
TorchScript does (its `__setstate__` methods run at load), so it needs `trusted=True`. The program maps the inputs
listed in meta["inputs"] (float32, policy layout: per obs key (B, T_k, ...), images in
[0, 1] channels first; then the initial noise (B, horizon, Da) for diffusion and flow) to the
raw-unit action chunk (B, horizon, Da) whose row meta["action_start"] is the current step.
Diffusion and flow artifacts also take `prefix` (B, horizon, Da) raw actions and `prefix_mask`
(B, horizon): rows with mask 1 are held at the prefix while sampling (inpainting); `run` passes
zeros (no row held) when they are not given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.text import untrained_instruction

ARTIFACT_VERSION = 1
FORMATS = ("torchscript", "onnx")
MODEL_FILES = {"torchscript": "policy.pt", "onnx": "policy.onnx"}
NOISE_INPUT = "noise"
PREFIX_INPUT, PREFIX_MASK_INPUT = "prefix", "prefix_mask"
SAMPLING_INPUTS = (NOISE_INPUT, PREFIX_INPUT, PREFIX_MASK_INPUT)


class ArtifactBase:
    """What every artifact offers, wherever it runs: `meta`, the input names, and `run(inputs)` -> chunk."""

    def __init__(self, directory: Path | str, meta: dict[str, Any]):
        self.directory = directory
        self.meta = meta
        self.input_names = [spec["name"] for spec in meta["inputs"]]
        self.takes_noise = NOISE_INPUT in self.input_names
        self.takes_prefix = PREFIX_INPUT in self.input_names
        self.obs_inputs = [spec for spec in meta["inputs"] if spec["name"] not in SAMPLING_INPUTS]
        self.text_inputs = [spec for spec in self.obs_inputs if spec["type"] == "text"]  # instructions

    def check_instruction(self, text: str) -> str | None:
        """Why the policy may not follow `text`: no training instruction of a text input names it (None when one
        does, or when the artifact lists none); a ValueError when that input's encoder knows only those (a
        pretrained text encoder exported as a table of them)."""
        for spec in self.text_inputs:
            problem = untrained_instruction(text, spec.get("instructions"))
            if problem and spec.get("closed"):
                raise ValueError(f"{problem}: {self.directory}'s text encoder was exported with the training "
                                 "instructions only")
            if problem:
                return problem
        return None

    @property
    def noise_shape(self) -> tuple[int, int]:
        """(horizon, Da) of one row of initial noise."""
        return self.meta["horizon"], self.meta["output"]["shape"][-1]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """{input name: float32 array (B, ...)} -> raw-unit chunk (B, horizon, Da) as float32 numpy."""
        return self.execute(self.prepare(inputs))

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The inputs in program order as float32 arrays, checked; an absent prefix means none held."""
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
        return arrays

    def execute(self, arrays: list[np.ndarray], timeout_s: float | None = None) -> np.ndarray:
        """The chunk for inputs already `prepare`d; a run longer than `timeout_s` is cut with TimeoutError where the
        backend can stop it."""
        raise NotImplementedError


class Artifact(ArtifactBase):
    """An artifact run in this process, with onnxruntime (ONNX) or torch (TorchScript, trusted only).

    `threads` sets the CPU threads inference uses (torch's intra-op threads, process-wide, or the
    onnxruntime session's); None keeps the library's default (one per core)."""

    def __init__(self, directory: Path, meta: dict[str, Any], threads: int | None = None, trusted: bool = False):
        super().__init__(directory, meta)
        path = file_inside(directory, meta["file"], "file")
        if meta["format"] == "torchscript":
            if not trusted:
                raise ValueError(f"{path} is TorchScript, which runs code from the file when it is loaded\n  fix: "
                                 "re-export the checkpoint with format=onnx (the default, which runs no code on "
                                 "load), or, only if you made the file or trust its source, pass trusted=true")
            import torch

            if threads:
                torch.set_num_threads(threads)
            self._program = torch.jit.load(str(path), map_location="cpu").eval()
            self._session = None
        else:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads or 0
            check_external_data(directory, path)
            self._program = None
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, arrays: list[np.ndarray], timeout_s: float | None = None) -> np.ndarray:
        if self._session is not None:
            return self._run_session(dict(zip(self.input_names, arrays, strict=True)), timeout_s)
        import torch

        with torch.inference_mode():
            return self._program(*[torch.from_numpy(a) for a in arrays]).numpy()


    def _run_session(self, feed: dict[str, np.ndarray], timeout_s: float | None) -> np.ndarray:
        """onnxruntime's run, terminated from a timer thread after `timeout_s`."""
        import onnxruntime

        options = onnxruntime.RunOptions()
        timer = threading.Timer(timeout_s, setattr, (options, "terminate", True)) if timeout_s else None
        if timer is not None:
            timer.start()
        try:
            return self._session.run(None, feed, options)[0]
        except Exception as error:
            if options.terminate:
                raise TimeoutError(f"inference took longer than {timeout_s} s and was stopped") from error
            raise
        finally:
            if timer is not None:
                timer.cancel()


def is_artifact(path: str | Path) -> bool:
    """Whether `path` is an artifact directory written by `robopolicy export` (not a checkpoint)."""
    path = Path(path)
    return (path / "meta.json").is_file() and not (path / "config.yaml").is_file()


def file_inside(directory: Path, name: Any, key: str) -> Path:
    """`directory / name` when it lies inside `directory` (links resolved); an artifact names no other file."""
    root = directory.resolve()
    path = (directory / str(name)).resolve()
    if not isinstance(name, str) or not name or not path.is_relative_to(root) or path == root:
        raise ValueError(f"{directory / 'meta.json'}: {key} {name!r} is not a file inside the artifact directory\n"
                         "  fix: an artifact names only its own files: re-export the checkpoint")
    return path


def check_external_data(directory: Path, program: Path) -> None:
    """Every external-data file an ONNX program names must lie inside the artifact directory."""
    import onnx

    for tensor in _tensors(onnx.load(str(program), load_external_data=False).graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                file_inside(directory, entry.value, f"external data of tensor {tensor.name!r}")


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
                yield from _tensors(subgraph)


def load_artifact(directory: str | Path, threads: int | None = None, trusted: bool = False) -> Artifact:
    """Open an artifact directory written by `robopolicy export` (`threads`: see Artifact; `trusted`: allow a
    TorchScript program, which runs code when loaded)."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        what = f"{directory} does not exist" if not directory.exists() else f"{meta_path} is missing"
        raise FileNotFoundError(f"{what}\n  fix: pass an artifact directory written by `robopolicy export` (eval and "
                                "predict also take a checkpoint directory)")
    meta = json.loads(meta_path.read_text())
    if meta.get("artifact_version") != ARTIFACT_VERSION:
        raise ValueError(f"{meta_path}: artifact_version {meta.get('artifact_version')} is not {ARTIFACT_VERSION}; "
                         "re-export the checkpoint with this version of robopolicy")
    if meta.get("format") not in FORMATS:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not one of {FORMATS}")
    return Artifact(directory, meta, threads, trusted)
