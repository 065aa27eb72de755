"""Settings of the consistency family: a flow-parameterized student and how it is distilled."""

from __future__ import annotations

from dataclasses import dataclass

from robopolicy.policies.flow.config import FlowConfig


@dataclass
class ConsistencyConfig(FlowConfig):
    """A one-step student; `robopolicy distill TEACHER` fills these in from the teacher's checkpoint.

    The flow fields (backbone, time_embed_scale) describe the student's network; the flow's
    training-time law and adaptive head do not apply (times come from the teacher's grid).
    """

    teacher: str = ""  # checkpoint directory of the trained diffusion or flow teacher (read in training only)
    teacher_use_ema: bool = True  # distill the teacher's EMA weights
    teacher_steps: int = 20  # N: the teacher's ODE in N deterministic steps (20 divides 100 diffusion steps evenly)
    target_decay: float = 0.95  # EMA decay of the target network (0: the online student, gradient stopped)
    huber_c: float = 0.001  # pseudo-Huber constant per chunk element: c = huber_c * sqrt(horizon * action_dim)
    num_inference_steps: int = 1  # 1: one network pass per chunk; 2-3: chained steps (see model.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive:
            raise ValueError("a consistency student has no adaptive sampling; set adaptive=false")
        if self.teacher_steps < 1:
            raise ValueError(f"teacher_steps must be at least 1, got {self.teacher_steps}")
        if not 0.0 <= self.target_decay < 1.0:
            raise ValueError(f"target_decay must be in [0, 1), got {self.target_decay}")
        if self.huber_c <= 0:
            raise ValueError(f"huber_c must be positive, got {self.huber_c}")
