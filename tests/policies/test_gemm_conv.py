"""The U-Net's CPU training convolution (im2col + matmul) is nn.Conv1d: same outputs, gradients and parameters;
evaluation and export keep the standard convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robopolicy.policies.networks import gemm_conv
from robopolicy.policies.networks.gemm_conv import Conv1d
from robopolicy.policies.networks.unet1d import UNet1D, UNetConfig


@pytest.mark.parametrize(("kernel", "bias"), [(5, True), (3, False), (1, True)])
def test_the_matmul_path_has_the_convolution_s_exact_gradients(kernel, bias):
    layer = Conv1d(6, 5, kernel, padding=kernel // 2, bias=bias).double().train()
    x = torch.randn(4, 6, 8, dtype=torch.float64, requires_grad=True)
    params = (x, layer.weight) + ((layer.bias,) if bias else ())
    assert torch.autograd.gradcheck(lambda *_: layer(x), params)
    expected = F.conv1d(x, layer.weight, layer.bias, padding=kernel // 2)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


def test_training_outputs_and_gradients_match_nn_conv1d_in_float32():
    torch.manual_seed(0)
    ours, reference = Conv1d(64, 96, 5, padding=2), nn.Conv1d(64, 96, 5, padding=2)
    reference.load_state_dict(ours.state_dict())  # the same parameters, the same state dict keys
    x = torch.randn(32, 64, 16)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), reference(x_ref)
    grad = torch.randn_like(out_ref)
    out_ours.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)
    assert out_ours.is_contiguous() and x_ours.grad.is_contiguous()


def test_evaluation_strided_layers_and_no_grad_run_the_standard_convolution(monkeypatch):
    calls = []
    monkeypatch.setattr(gemm_conv._Conv1dAsMatmul, "apply", lambda *args: calls.append(args))
    layer, x = Conv1d(8, 8, 5, padding=2), torch.randn(2, 8, 16)
    expected = F.conv1d(x, layer.weight, layer.bias, padding=2)
    torch.testing.assert_close(layer.eval()(x), expected, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(layer.train()(x), expected, rtol=0, atol=0)
    strided = Conv1d(8, 8, 3, stride=2, padding=1).train()
    assert not strided.as_matmul and strided(x).shape == (2, 8, 8)
    assert calls == []


def test_a_unet_training_step_has_the_same_loss_and_gradients_either_way():
    torch.manual_seed(0)
    net = UNet1D(action_dim=2, horizon=16, feature_dims={"obs": 20}, steps={"obs": 2},
                 config=UNetConfig(down_dims=(32, 64, 128))).train()
    layers = [m for m in net.modules() if isinstance(m, Conv1d) and m.as_matmul]
    assert len(layers) == 31  # every length-keeping convolution of the 3-level U-Net; its 2 strided ones are not
    sample, step, features = torch.randn(8, 16, 2), torch.randint(0, 100, (8,)), {"obs": torch.randn(8, 2, 20)}

    def loss_and_grads(as_matmul: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for m in layers:
            m.as_matmul = as_matmul
        net.zero_grad()
        loss = net(sample, step, features).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()]

    fast_loss, fast_grads = loss_and_grads(True)
    slow_loss, slow_grads = loss_and_grads(False)
    torch.testing.assert_close(fast_loss, slow_loss, rtol=1e-5, atol=1e-6)
    for fast, slow in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-3, atol=1e-5)
