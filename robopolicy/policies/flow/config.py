"""Settings of the flow-matching family."""

from __future__ import annotations

from dataclasses import dataclass, field

from robopolicy.policies.base import PolicyConfig
from robopolicy.policies.networks.backbone import BackboneConfig, backbone_config

TIME_SAMPLING = ("uniform", "beta")


@dataclass
class FlowConfig(PolicyConfig):
    """Rectified flow x_t = t * noise + (1 - t) * action; the backbone predicts the velocity noise - action."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    time_sampling: str = "uniform"  # training times: "uniform" on [0, 1], or "beta" (more weight near the noise end)
    beta_alpha: float = 1.5  # t = time_scale * Beta(beta_alpha, beta_beta) when time_sampling is "beta"
    beta_beta: float = 1.0
    time_scale: float = 0.999
    time_embed_scale: float = 100.0  # t is multiplied by this before the sinusoidal embedding
    num_inference_steps: int = 10  # Euler steps by default; overridable per call
    adaptive: bool = False  # train a variance head and sample with adaptive steps (see flow/model.py)
    adaptive_eta: float = 0.25  # step = clamp(adaptive_eta / predicted std, adaptive_min_step, t)
    adaptive_min_step: float = 1.0 / 16
    variance_hidden_dim: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        self.backbone = backbone_config(self.backbone, self.horizon)
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLING}, got {self.time_sampling!r}")
        if self.num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        if not 0.0 < self.adaptive_min_step <= 1.0 or self.adaptive_eta <= 0:
            raise ValueError("adaptive_min_step must be in (0, 1] and adaptive_eta positive")
