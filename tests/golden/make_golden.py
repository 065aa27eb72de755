"""Regenerate the golden outputs of every policy family: python -m tests.golden.make_golden

Each family is built tiny with fixed seeds, fed fixed inputs, and its loss and sampled chunk
are stored in tests/golden/<family>.safetensors. Regenerate only when a change of the outputs
is intended, and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.base import Policy
from robopolicy.policies.registry import make_policy

GOLDEN_DIR = Path(__file__).resolve().parent
SHAPE_META = {"obs": {"agent_pos": {"shape": [2]}, "keypoint": {"shape": [9, 2]}}, "action": {"shape": [2]}}
SETTINGS = {
    "diffusion_unet": {"backbone": {"unet": {"down_dims": [16, 32, 64], "step_embed_dim": 16}}},
    "diffusion_transformer": {"backbone": {"kind": "transformer", "transformer": {"d_model": 32, "n_heads": 2,
                                                                                 "n_layers": 2, "dropout": 0.0}}},
    "flow": {"backbone": {"unet": {"down_dims": [16, 32, 64], "step_embed_dim": 16}}},
    "act": {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "n_vae_encoder_layers": 1,
            "latent_dim": 8, "dropout": 0.0},
}


def inputs() -> tuple[EpisodeStore, dict]:
    """A fixed store (for the normalizer) and a fixed batch in raw units."""
    rng = np.random.default_rng(1234)
    data = {"agent_pos": rng.uniform(0, 512, (40, 2)).astype(np.float32),
            "keypoint": rng.uniform(0, 512, (40, 9, 2)).astype(np.float32),
            "action": rng.uniform(0, 512, (40, 2)).astype(np.float32)}
    batch = {"obs": {"agent_pos": torch.from_numpy(data["agent_pos"][:8].reshape(4, 2, 2)),
                     "keypoint": torch.from_numpy(data["keypoint"][:8].reshape(4, 2, 9, 2))},
             "action": torch.from_numpy(np.resize(data["action"], (4, 16, 2)))}
    return EpisodeStore.from_arrays(data, np.array([40])), batch


def outputs(family: str) -> dict[str, torch.Tensor]:
    """Loss (seeded) and sampled chunk (seeded) of the tiny family on the fixed inputs."""
    store, batch = inputs()
    torch.manual_seed(0)
    policy: Policy = make_policy(family, SHAPE_META, SETTINGS[family])
    policy.set_normalizer(Normalizer.fit(store, SHAPE_META))
    policy.eval()
    torch.manual_seed(1)
    loss = policy.compute_loss(batch).detach()
    chunk = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(2))["action_pred"]
    return {"loss": loss.reshape(1), "action_pred": chunk.contiguous()}


def main() -> None:
    for family in SETTINGS:
        save_file(outputs(family), str(GOLDEN_DIR / f"{family}.safetensors"))


if __name__ == "__main__":
    main()
