"""The Policy API every family implements, and the settings all families share.

Batches are `{"obs": {key: (B, To_k, ...)}, "action": (B, horizon, Da), "action_is_pad": (B, horizon)}`
in raw units (ARCHITECTURE.md); a policy normalizes inside and returns raw-unit actions:
`predict_action(obs) -> {"action": (B, n_action_steps, Da), "action_pred": (B, horizon, Da)}`,
where `action` starts at the current step (the last observation, index n_obs_steps - 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robopolicy.datasets.layout import Window
from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.relative import action_to_absolute, action_to_relative, obs_to_relative
from robopolicy.datasets.shape_meta import ShapeMeta, parse_shape_meta
from robopolicy.policies.encoders.config import EncoderConfig

Batch = Mapping[str, Any]


@dataclass
class PolicyConfig:
    """Horizons and the observation encoder, shared by every policy family."""

    horizon: int = 16  # steps of actions predicted per call (the chunk), starting n_obs_steps - 1 steps back
    n_obs_steps: int = 2  # observation steps the policy conditions on (To)
    n_action_steps: int = 8  # actions executed per call (Ta), starting at the current step
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        if not 1 <= self.n_obs_steps <= self.horizon:
            raise ValueError(f"n_obs_steps ({self.n_obs_steps}) must be in [1, horizon={self.horizon}]")
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) must be in [1, horizon - n_obs_steps + 1 = "
                f"{self.horizon - self.n_obs_steps + 1}]: the executed actions start at the current step"
            )

    @property
    def window(self) -> Window:
        """The steps this policy trains on, which the dataset reads (robopolicy.datasets.layout.Window)."""
        return Window(self.horizon, self.n_obs_steps, self.n_action_steps)

    @property
    def action_start(self) -> int:
        """Index in the predicted chunk of the action for the current step."""
        return self.n_obs_steps - 1


class Policy(nn.Module):
    """Base class: owns shape_meta, the normalizer and the raw-unit <-> normalized boundary."""

    takes_noise = False  # whether predict_action accepts the initial noise (noise=) that fixes its result

    def __init__(self, config: PolicyConfig, shape_meta: Mapping[str, Any] | ShapeMeta):
        super().__init__()
        self.config = config
        self.shape_meta = parse_shape_meta(shape_meta)
        self.action_dim = int(torch.Size(self.shape_meta.action_shape).numel())
        self.normalizer: Normalizer | None = None

    @property
    def device(self) -> torch.device:
        """Where the policy's weights are, and so where its inputs go."""
        return next(self.parameters()).device

    def set_normalizer(self, normalizer: Normalizer) -> None:
        """Install the fitted normalizer; it must know "action" and may know any obs key."""
        if "action" not in normalizer:
            raise ValueError("the normalizer has no 'action' entry; fit it with the policy's shape_meta")
        self.normalizer = normalizer

    def _require_normalizer(self) -> Normalizer:
        if self.normalizer is None:
            raise RuntimeError("call policy.set_normalizer(Normalizer.fit(store, shape_meta)) before training or use")
        return self.normalizer

    def normalize_obs(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw obs -> normalized obs (keys without a normalizer pass through), pose keys in the policy's frame."""
        missing = set(self.shape_meta.obs) - set(obs)
        if missing:
            raise KeyError(f"obs lacks keys {sorted(missing)}; the policy needs {sorted(self.shape_meta.obs)}")
        obs = {k: obs[k] for k in self.shape_meta.obs}
        frame = self.shape_meta.action_frame
        return self._require_normalizer().normalize(obs_to_relative(frame, obs) if frame is not None else obs)

    def normalize_action(self, action: torch.Tensor, obs: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Raw actions -> normalized, in the policy's frame (relative to the pose of raw `obs`, which a policy with a
        relative action frame needs)."""
        frame = self.shape_meta.action_frame
        if frame is not None:
            action = action_to_relative(frame, action, self._frame_obs(obs))
        return self._require_normalizer()["action"].normalize(action)

    def unnormalize_action(self, action: torch.Tensor, obs: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Normalized actions in the policy's frame -> raw absolute actions (the inverse of normalize_action)."""
        action = self._require_normalizer()["action"].unnormalize(action)
        frame = self.shape_meta.action_frame
        return action_to_absolute(frame, action, self._frame_obs(obs)) if frame is not None else action

    def _frame_obs(self, obs: Mapping[str, torch.Tensor] | None) -> Mapping[str, torch.Tensor]:
        if obs is None:
            raise ValueError("this policy's actions are relative to the observed end-effector pose: pass the raw obs")
        return obs

    def chunk_to_output(self, action_pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, horizon, Da) raw-unit chunk -> the predict_action dict."""
        start = self.config.action_start
        return {"action": action_pred[:, start : start + self.config.n_action_steps], "action_pred": action_pred}

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        """The training loss, so that wrappers that hook forward (DDP) see the training pass."""
        return self.compute_loss(batch)

    def predict_action(
        self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None, **sampling: Any
    ) -> dict[str, torch.Tensor]:
        """Raw-unit actions for raw-unit obs; `generator` seeds the sampling noise."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget state carried across calls (e.g. temporal ensembling); no-op by default."""

    # What the trainer and export ask of a policy, so that neither branches on its class.
    def encoder_module(self) -> nn.Module | None:
        """The observation encoder, trained at its own learning rate; None if the policy has none."""
        return None

    def parameter_groups(self, lr: float, encoder_lr_scale: float) -> list[dict[str, Any]]:
        """Optimizer groups: the observation encoder at lr x encoder_lr_scale, everything else at lr."""
        encoder = self.encoder_module()
        encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        groups = [{"params": [p for p in self.parameters() if id(p) not in encoder_ids], "lr": lr}]
        if encoder_ids:
            groups.append({"params": list(encoder.parameters()), "lr": lr * encoder_lr_scale})
        return groups

    def export_sampling(self, sampler: str | None, num_inference_steps: int | None) -> dict[str, Any]:
        """The sampling arguments an exported artifact bakes in; refuses what a traced program cannot fix.
        A policy that samples in one pass takes neither."""
        if sampler is not None:
            raise ValueError(f"sampler= applies to diffusion policies only, not {type(self).__name__}")
        if num_inference_steps is not None:
            raise ValueError(f"num_inference_steps= applies to diffusion and flow policies, not {type(self).__name__}")
        return {}

    def artifact_meta(self) -> dict[str, Any]:
        """What an artifact's meta.json must record for the runtime to use its chunks as this policy would."""
        return {"temporal_ensemble_coeff": None}

    def _table_text_encoders(self) -> dict[str, nn.Module]:
        """The text encoders that tokenize in Python (a pretrained model's tokenizer), by obs key."""
        encoders = getattr(self.encoder_module(), "encoders", {})
        return {key: encoders[key] for key in self.shape_meta.text_keys
                if key in encoders and hasattr(encoders[key], "fix_instructions")}

    def needs_instruction_table(self) -> bool:
        """Whether an export must fix the instructions the policy knows (`fix_instructions`)."""
        return bool(self._table_text_encoders())

    def fix_instructions(self, texts: list[str]) -> bool:
        """Make text encoders that tokenize in Python look up these instructions in a table, so that a traced
        program holds them; True when the policy then knows only these instructions."""
        table_encoders = self._table_text_encoders()
        for key, encoder in table_encoders.items():
            encoder.fix_instructions(texts, self.shape_meta.obs[key].shape[0])
        return bool(table_encoders)

    def prepare_export(self) -> None:
        """Drop what blends chunks across calls: an artifact returns whole chunks, and the runtime blends them."""
