"""Loading an artifact runs no code from it: TorchScript needs trusted=true, and every file an artifact names
(its program, ONNX external data) lies inside its directory; export refuses a program that differs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from robopolicy.cli import main
from robopolicy.deploy.export import export_checkpoint
from robopolicy.policies.checkpoint import load_policy
from robopolicy.runtime.artifact import load_artifact


class WritesOnLoad(torch.nn.Module):
    """TorchScript whose __setstate__ writes a file when the program is loaded, as a crafted artifact could."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target, self.training = state
        torch.save(torch.zeros(1), state[0])


def crafted_artifact(source: Path, directory: Path, **meta_changes) -> Path:
    """A copy of a real artifact directory with meta.json changed."""
    shutil.copytree(source, directory)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, **meta_changes}))
    return directory


def test_a_torchscript_artifact_that_writes_a_file_on_load_is_refused_unless_trusted(state_artifact, tmp_path, capsys):
    written = tmp_path / "written_by_the_artifact.pt"
    artifact = crafted_artifact(state_artifact, tmp_path / "crafted", format="torchscript", file="policy.pt")
    torch.jit.save(torch.jit.script(WritesOnLoad(str(written))), str(artifact / "policy.pt"))
    for command in (["serve", str(artifact), "port=1"], ["eval", str(artifact)], ["predict", str(artifact)],
                    ["deploy", str(artifact)]):
        assert main(command) == 2, command
        assert "trusted=true" in capsys.readouterr().err
    assert not written.exists(), "loading the artifact ran its code"
    load_artifact(artifact, trusted=True)
    assert written.exists()  # what trusted=true allows, and why it is not the default


def test_files_named_outside_the_artifact_directory_are_refused(state_artifact, tmp_path):
    outside = tmp_path / "secret.onnx"
    shutil.copy(state_artifact / "policy.onnx", outside)
    for name in ("../secret.onnx", str(outside), "", "."):
        crafted = crafted_artifact(state_artifact, tmp_path / f"crafted{len(name)}{name[:1]}", file=name)
        with pytest.raises(ValueError, match="not a file inside the artifact directory"):
            load_artifact(crafted)
    crafted = tmp_path / "linked"
    shutil.copytree(state_artifact, crafted)
    (crafted / "policy.onnx").unlink()
    (crafted / "policy.onnx").symlink_to(outside)
    with pytest.raises(ValueError, match="not a file inside"):
        load_artifact(crafted)


def matmul_model() -> onnx.ModelProto:
    """x (1, 2) @ ones (2, 2): a one-node program whose weight can live in an external file."""
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "weight"], ["action_pred"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("action_pred", onnx.TensorProto.FLOAT, [1, 2])],
                              [weight])
    return helper.make_model(graph)


def test_onnx_external_data_outside_the_artifact_is_refused(tmp_path):
    for location, allowed in (("weights.bin", True), ("../outside.bin", False)):
        directory = tmp_path / ("inside" if allowed else "escapes")
        directory.mkdir()
        onnx.save_model(matmul_model(), str(directory / "policy.onnx"), save_as_external_data=True, location="weights.bin",
                        size_threshold=0)
        if not allowed:  # point the tensor at a file beside the directory
            (directory / "weights.bin").rename(tmp_path / "outside.bin")
            saved = onnx.load(str(directory / "policy.onnx"), load_external_data=False)
            saved.graph.initializer[0].external_data[0].value = location
            onnx.save_model(saved, str(directory / "policy.onnx"))
        meta = {"artifact_version": 1, "format": "onnx", "file": "policy.onnx", "horizon": 1,
                "inputs": [{"name": "x", "type": "low_dim", "shape": [2]}], "output": {"shape": [1, 2]}}
        (directory / "meta.json").write_text(json.dumps(meta))
        if allowed:
            np.testing.assert_array_equal(load_artifact(directory).run({"x": np.ones((1, 2), np.float32)}), [[2, 2]])
        else:
            with pytest.raises(ValueError, match="external data of tensor 'weight'"):
                load_artifact(directory)


def test_export_refuses_a_program_the_tracer_got_wrong(state_artifact, tmp_path, monkeypatch):
    checkpoint = Path(json.loads((state_artifact / "meta.json").read_text())["source"]["checkpoint"])
    policy_class = type(load_policy(checkpoint))
    original = policy_class.predict_action

    def branches_on_batch_size(self, obs, **kwargs):  # a Python branch the trace freezes at batch 1
        result = original(self, obs, **kwargs)
        if next(iter(obs.values())).shape[0] == 1:
            result["action_pred"] = result["action_pred"] + 1.0
        return result

    monkeypatch.setattr(policy_class, "predict_action", branches_on_batch_size)
    with pytest.raises(RuntimeError, match="differs from the checkpoint policy"):
        export_checkpoint(checkpoint, [f"out={tmp_path / 'refused'}"])
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".tmp-*"))
