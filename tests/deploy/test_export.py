"""`robopolicy export`: the artifact gives the checkpoint policy's actions, and the runtime loads it alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robopolicy.cli import main
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.deploy.export import export_checkpoint
from robopolicy.policies.checkpoint import load_policy, read_meta
from robopolicy.runtime.artifact import load_artifact
from robopolicy.training.distill import distill
from robopolicy.training.run import train

UNET = ["policy.settings.backbone.unet.down_dims=[16,32,64]", "policy.settings.backbone.unet.step_embed_dim=16"]
TINY = {
    "diffusion_unet": UNET,
    "flow": UNET,
    "diffusion_transformer": ["policy.settings.backbone.transformer.d_model=32",
                              "policy.settings.backbone.transformer.n_heads=2",
                              "policy.settings.backbone.transformer.n_layers=1"],
    "act": ["policy.settings.d_model=32", "policy.settings.n_heads=2", "policy.settings.n_encoder_layers=1",
            "policy.settings.n_decoder_layers=1", "policy.settings.n_vae_encoder_layers=1",
            "policy.settings.temporal_ensemble=true", "policy.settings.n_action_steps=1"],
}
TRAIN = ["training.batch_size=8", "training.num_workers=0", "training.max_steps=2", "training.val_every=2",
         "training.checkpoint_every=2", "training.val_batches=1", "training.action_error_windows=4",
         "optim.warmup_steps=1", "task.dataset.max_train_episodes=4", "logging.tensorboard=false"]
IMAGE_ENCODER = ["encoder.image.base_width=8", "encoder.image.feature_dim=16", "encoder.image.num_keypoints=8",
                 "encoder.image.crop_shape=[84,84]"]


@pytest.fixture(scope="module")
def checkpoints(pusht_path, tmp_path_factory):
    """Tiny two-step checkpoints trained on the real Push-T demos, built once per (task, family)."""
    built: dict[tuple[str, str], Path] = {}

    def get(task: str, family: str) -> Path:
        if (task, family) not in built:
            run = tmp_path_factory.mktemp(f"{task}_{family}")
            extra = IMAGE_ENCODER if task == "pusht_image" else []
            if family == "consistency":  # distilled from the tiny diffusion teacher
                distill(get(task, "diffusion_unet"), [f"run_dir={run}", "training.max_steps=2"])
            else:
                train([f"task={task}", f"policy={family}", f"task.dataset.path={pusht_path}", f"run_dir={run}",
                       *TRAIN, *TINY[family], *extra])
            built[task, family] = run / "checkpoints" / "last"
        return built[task, family]

    return get


def real_windows(checkpoint: Path, pusht_path: Path, n: int = 3) -> dict[str, torch.Tensor]:
    """Observation windows from the Push-T demos, in the checkpoint policy's layout."""
    meta = read_meta(checkpoint)
    settings = meta["policy_settings"]
    dataset = SequenceDataset(EpisodeStore.open(pusht_path), meta["shape_meta"], horizon=settings["horizon"],
                              n_obs_steps=settings["n_obs_steps"], n_action_steps=settings["n_action_steps"])
    return dataset[np.arange(0, 900, 900 // n)[:n]]["obs"]


CASES = [
    ("pusht_keypoint", "diffusion_unet", "torchscript", []),
    ("pusht_keypoint", "diffusion_unet", "onnx", ["num_inference_steps=4"]),
    ("pusht_keypoint", "diffusion_transformer", "torchscript", ["num_inference_steps=5"]),
    ("pusht_keypoint", "diffusion_transformer", "onnx", ["num_inference_steps=5"]),
    ("pusht_keypoint", "flow", "onnx", []),
    ("pusht_keypoint", "flow", "torchscript", ["num_inference_steps=3"]),
    ("pusht_keypoint", "act", "torchscript", []),
    ("pusht_keypoint", "act", "onnx", []),
    ("pusht_image", "diffusion_unet", "torchscript", []),
    ("pusht_image", "flow", "onnx", ["num_inference_steps=3"]),
    ("pusht_keypoint", "consistency", "onnx", []),
    ("pusht_keypoint", "consistency", "torchscript", ["num_inference_steps=2"]),
    ("pusht_image", "consistency", "auto", []),
]


@pytest.mark.parametrize(("task", "family", "fmt", "options"), CASES, ids=["-".join(c[:3]) for c in CASES])
def test_artifact_matches_the_checkpoint_policy_on_real_observations(checkpoints, pusht_path, tmp_path, task, family,
                                                                     fmt, options):
    checkpoint = checkpoints(task, family)
    meta = export_checkpoint(checkpoint, [f"out={tmp_path / 'artifact'}", f"format={fmt}", *options])
    artifact = load_artifact(tmp_path / "artifact", trusted=True)  # made by this test: TorchScript may load
    if fmt == "auto":  # both formats timed, the faster one kept
        latency = meta["format_latency_ms"]
        assert set(latency) == {"torchscript", "onnx"} and all(v > 0 for v in latency.values())
        assert artifact.meta["format"] == min(latency, key=latency.get)
        assert sorted(p.name for p in (tmp_path / "artifact").iterdir()) == sorted(["meta.json", artifact.meta["file"]])
    obs = real_windows(checkpoint, pusht_path)
    policy = load_policy(checkpoint)
    if hasattr(policy, "ensembler"):
        policy.ensembler = None  # compare whole chunks; ensembling is the runtime's job
    inputs = {k: v.numpy() for k, v in obs.items()}
    sampling = {}
    if artifact.takes_noise:
        noise = torch.randn(3, *artifact.noise_shape, generator=torch.Generator().manual_seed(7))
        inputs["noise"] = noise.numpy()
        sampling = {"noise": noise, **{k: v for k, v in meta["sampling"].items()}}
    expected = policy.predict_action(obs, **sampling)["action_pred"].numpy()
    got = artifact.run(inputs)
    assert got.shape == expected.shape == (3, meta["horizon"], 2)
    # compared where actions span [-1, 1]: in Push-T's pixels float32 itself resolves only ~6e-5
    normalized = [policy.normalize_action(torch.from_numpy(x)) for x in (got, expected)]
    assert (normalized[0] - normalized[1]).abs().max() < 1e-4
    assert 0 < np.abs(expected).max() < 1e3  # real Push-T actions, in pixels
    assert meta["control_hz"] == 10.0 and meta["action_start"] == meta["n_obs_steps"] - 1


@pytest.mark.parametrize(("family", "steps"), [("diffusion_unet", 10), ("flow", 10), ("consistency", 2)])
def test_inpainting_holds_the_prefix_rows_in_the_policy_and_the_artifact(checkpoints, pusht_path, tmp_path, family,
                                                                          steps):
    # a one-step sampler sees the held rows only at t = 1, where they are pure noise: inpainting needs 2+ steps
    checkpoint = checkpoints("pusht_keypoint", family)
    export_checkpoint(checkpoint, [f"out={tmp_path / 'a'}", "format=onnx", f"num_inference_steps={steps}"])
    artifact, policy = load_artifact(tmp_path / "a"), load_policy(checkpoint)
    obs = real_windows(checkpoint, pusht_path, 2)
    noise = torch.randn(2, *artifact.noise_shape, generator=torch.Generator().manual_seed(3))
    free = policy.predict_action(obs, noise=noise, num_inference_steps=steps)["action_pred"]
    prefix = free + 25.0  # 25 px away from where the policy would go
    mask = torch.zeros(2, artifact.noise_shape[0])
    mask[:, :5] = 1.0
    held = policy.predict_action(obs, noise=noise, prefix=prefix, prefix_mask=mask,
                                 num_inference_steps=steps)["action_pred"]
    torch.testing.assert_close(held[:, :5], prefix[:, :5], atol=1e-3, rtol=0)
    assert (held[:, 5:] - free[:, 5:]).abs().max() > 1e-3  # the sampled rows respond to the held ones
    got = artifact.run({**{k: v.numpy() for k, v in obs.items()}, "noise": noise.numpy(), "prefix": prefix.numpy(),
                        "prefix_mask": mask.numpy()})
    normalized = [policy.normalize_action(torch.as_tensor(x)) for x in (got, held)]
    assert (normalized[0] - normalized[1]).abs().max() < 1e-4
    unheld = policy.predict_action(obs, noise=noise, prefix=prefix, prefix_mask=torch.zeros_like(mask),
                                   num_inference_steps=steps)
    torch.testing.assert_close(unheld["action_pred"], free)


def test_noise_is_an_input_so_results_are_reproducible_and_depend_on_it(checkpoints, pusht_path, tmp_path):
    checkpoint = checkpoints("pusht_keypoint", "flow")
    export_checkpoint(checkpoint, [f"out={tmp_path / 'a'}"])
    artifact = load_artifact(tmp_path / "a")
    obs = {k: v.numpy() for k, v in real_windows(checkpoint, pusht_path, 1).items()}
    noise = np.random.default_rng(0).standard_normal((2, 1, *artifact.noise_shape)).astype(np.float32)
    first, again, other = (artifact.run({**obs, "noise": noise[i]}) for i in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_the_runtime_loads_an_artifact_without_training_or_policy_code(checkpoints, tmp_path):
    export_checkpoint(checkpoints("pusht_keypoint", "diffusion_unet"), [f"out={tmp_path / 'a'}", "format=onnx"])
    export_checkpoint(checkpoints("pusht_keypoint", "diffusion_unet"), [f"out={tmp_path / 'b'}"])
    script = f"""
import sys, numpy as np
from robopolicy.runtime.artifact import load_artifact
for name in ("a", "b"):
    artifact = load_artifact({str(tmp_path)!r} + "/" + name)
    inputs = {{s["name"]: np.zeros((1, *s["shape"]), np.float32) for s in artifact.meta["inputs"]}}
    assert artifact.run(inputs).shape == (1, 16, 2)
loaded = sorted(m for m in sys.modules if m.startswith(("robopolicy.training", "robopolicy.policies", "diffusers")))
print(loaded)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_export_cli_writes_meta_and_refuses_what_it_cannot_trace(checkpoints, tmp_path, capsys):
    checkpoint = checkpoints("pusht_keypoint", "diffusion_unet")
    assert main(["export", str(checkpoint), f"out={tmp_path / 'a'}", "num_inference_steps=4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert printed["sampling"] == meta["sampling"] == {"sampler": "ddim", "num_inference_steps": 4}
    assert [s["name"] for s in meta["inputs"]] == ["agent_pos", "keypoint", "noise", "prefix", "prefix_mask"]
    assert meta["inputs"][0]["step_offsets"] == [-1, 0] and meta["inputs"][0]["shape"] == [2, 2]
    assert meta["source"]["step"] == 2 and meta["parity_error"] < 1e-4
    assert main(["export", str(checkpoint), f"out={tmp_path / 'a'}"]) == 2  # exists
    assert main(["export", str(checkpoint), f"out={tmp_path / 'c'}", "sampler=ddpm"]) == 2
    assert "sampler=ddim" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
