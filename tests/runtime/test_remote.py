"""Remote inference: `robopolicy serve` answers over ZeroMQ + msgpack, and the client needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from robopolicy.deploy.export import export_checkpoint
from robopolicy.runtime.artifact import load_artifact
from robopolicy.training.run import train
from tests.network import free_port
from tests.tiny_runs import TWO_STEP_UNET

TINY = ["task=pusht_keypoint", *TWO_STEP_UNET, "task.dataset.max_train_episodes=4"]


@pytest.fixture(scope="module")
def served(pusht_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    train([*TINY, f"task.dataset.path={pusht_path}", f"run_dir={root / 'run'}"])
    export_checkpoint(root / "run" / "checkpoints" / "last", [f"out={root / 'artifact'}", "format=onnx"])
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "robopolicy.cli", "serve", str(root / "artifact"), f"port={port}"],
                              stderr=subprocess.PIPE, text=True)
    yield root / "artifact", f"tcp://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


CLIENT = """
import sys, json, numpy as np
sys.modules["torch"] = None  # the robot computer has no torch: importing it must fail
from robopolicy.runtime.remote import RemoteArtifact
from robopolicy.runtime.inference import ArtifactRunner
import robopolicy.runtime.loop, robopolicy.robots.sim  # the whole runtime loads without torch
artifact = RemoteArtifact(sys.argv[1], timeout_s=30)
inputs = {s["name"]: np.load(sys.argv[2])[s["name"]] for s in artifact.meta["inputs"]}
chunk = artifact.run(inputs)
window = {s["name"]: inputs[s["name"]][0] for s in artifact.obs_inputs}
again = ArtifactRunner(artifact, seed=0)(window)
np.save(sys.argv[3], chunk)
print(json.dumps({"server_ms": artifact.last_server_ms, "runner_shape": list(again.shape)}))
"""


def test_a_torch_free_client_gets_the_local_artifacts_actions_from_the_server(served, tmp_path):
    directory, address = served
    local = load_artifact(directory)
    rng = np.random.default_rng(0)
    inputs = {s["name"]: rng.uniform(50, 450, (2, *s["shape"])).astype(np.float32) for s in local.obs_inputs}
    inputs["noise"] = rng.standard_normal((2, *local.noise_shape)).astype(np.float32)
    inputs["prefix"] = rng.uniform(50, 450, (2, *local.noise_shape)).astype(np.float32)
    inputs["prefix_mask"] = (rng.uniform(size=(2, local.noise_shape[0])) < 0.3).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", **inputs)
    result = subprocess.run([sys.executable, "-c", CLIENT, address, str(tmp_path / "inputs.npz"),
                             str(tmp_path / "chunk.npy")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "chunk.npy"), local.run(inputs))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["server_ms"] > 0 and report["runner_shape"] == [16, 2]


def test_a_missing_server_times_out_with_a_clear_error():
    from robopolicy.runtime.remote import RemoteArtifact

    with pytest.raises(TimeoutError, match="robopolicy serve"):
        RemoteArtifact(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.3)
    with pytest.raises(ValueError, match="tcp://"):
        RemoteArtifact("localhost:5555")


def test_bad_inputs_come_back_as_errors_naming_the_input(served):
    from robopolicy.runtime.remote import RemoteArtifact, pack_array

    artifact = RemoteArtifact(served[1], timeout_s=30)
    inputs = {"agent_pos": np.zeros((1, 3, 2)), "keypoint": np.zeros((1, 2, 9, 2)), "noise": np.zeros((1, 16, 2))}
    with pytest.raises(ValueError, match="input 'agent_pos' must be"):  # 3 steps of history where it takes 2
        artifact._request({"op": "run", "inputs": {k: pack_array(v) for k, v in inputs.items()}})
    with pytest.raises(ValueError, match="unknown op"):
        artifact._request({"op": "train"})
    artifact.close()
