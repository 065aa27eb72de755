"""Settings of the diffusion family (U-Net or transformer backbone)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from robopolicy.policies.base import PolicyConfig
from robopolicy.policies.networks.backbone import BackboneConfig, backbone_config
from robopolicy.policies.schedulers import SAMPLERS, NoiseScheduleConfig
from robopolicy.settings import build_settings


@dataclass
class DiffusionConfig(PolicyConfig):
    """A diffusion policy: backbone, training noise schedule and the default sampler."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    sampler: str = "ddim"  # "ddpm", "ddim" or "dpmsolver++"; overridable per predict_action call
    num_inference_steps: int = 10  # sampling steps by default; overridable per call

    def __post_init__(self) -> None:
        super().__post_init__()
        self.backbone = backbone_config(self.backbone, self.horizon)
        if isinstance(self.noise, Mapping):
            self.noise = build_settings(NoiseScheduleConfig, self.noise, "noise")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 1 <= self.num_inference_steps <= self.noise.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.noise.num_train_timesteps}]")


@dataclass
class DiffusionTransformerConfig(DiffusionConfig):
    """The same family with the action transformer as the default backbone."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(kind="transformer"))
