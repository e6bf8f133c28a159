"""Synthesis: BN-statistics hooks, inversion losses, collapse detection, both synthesizers, the pool."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datafree.synthesis import (
    GeneratorConfig,
    GeneratorSynthesizer,
    PixelConfig,
    PixelSynthesizer,
    TeacherInverter,
)
from datafree.synthesis.base import BNStatsHook, adversarial_loss, class_stats, entropy_balance_loss, is_collapsed
from tests.tiny import tiny_cnn, trained_tiny_teacher

SHAPE = (3, 8, 8)


def test_bn_hook_matches_definition():
    bn = torch.nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    hook = BNStatsHook(bn)
    hook.active = True
    x = torch.randn(7, 5, 4, 4) * 2 + 1
    bn(x)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    expected = torch.norm(bn.running_mean - mean) + torch.norm(bn.running_var - var)
    assert torch.allclose(hook.loss, expected, atol=1e-5)
    hook.active = False
    hook.loss = None
    bn(x)
    assert hook.loss is None  # inactive outside synthesis: KD forward passes pay nothing


def test_bn_hook_momentum_blends_previous_batch():
    bn = torch.nn.BatchNorm2d(3).eval()
    hook = BNStatsHook(bn, momentum=0.9)
    hook.active = True
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2) + 3
    bn(a)
    hook.commit()
    bn(b)
    mean = 0.1 * b.mean((0, 2, 3)) + 0.9 * a.mean((0, 2, 3))
    assert torch.allclose(hook.last[0], mean, atol=1e-5)


def test_fused_bn_term_matches_the_eager_one_with_its_gradient(monkeypatch):
    from datafree.synthesis import base

    compiled = base._fast_bn_term()
    if compiled is None:
        pytest.skip("torch.compile is unavailable here: the eager BN term is used")
    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return compiled(*args)

    monkeypatch.setattr(base, "_fast_bn_term", lambda: counted)
    monkeypatch.setattr(base, "_FUSED", {"used": False, "broken": False})
    out = {}
    for fused in (False, True):  # an activation large enough to engage the compiled term, channels_last
        bn = torch.nn.BatchNorm2d(16).eval()
        torch.manual_seed(0)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        hook = BNStatsHook(bn, momentum=0.9, fusing=base.Fusing(allowed=fused))
        hook.active = True
        x = (torch.randn(64, 16, 32, 32) * 2 + 1).contiguous(memory_format=torch.channels_last)
        assert x.numel() >= base.FUSE_MIN_NUMEL
        x = x.requires_grad_(True)
        bn(x)  # the first batch, unblended
        hook.commit()
        bn(x * 1.5)  # blended with the first
        (g,) = torch.autograd.grad(hook.loss, x)
        out[fused] = hook.loss.detach(), hook.last, g
        assert len(calls) == (2 if fused else 0) and base.fused_bn_used() == fused
    (l0, last0, g0), (l1, last1, g1) = out[False], out[True]
    assert torch.allclose(l0, l1, rtol=1e-5) and torch.allclose(g0, g1, rtol=1e-4, atol=1e-9)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) and not b.requires_grad for a, b in zip(last0, last1))


def test_adversarial_loss_masks_disagreement_and_caps():
    t = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    s_agree = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s_disagree = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert adversarial_loss(s_disagree, t).item() == 0.0
    assert adversarial_loss(s_agree, t).item() < 0
    huge = torch.tensor([[1e4, 0.0], [1e4, 0.0]])
    assert adversarial_loss(huge, torch.tensor([[1.0, 0.9], [1.0, 0.9]]), cap=5.0).item() >= -5.0


def test_adversarial_loss_gradient_is_finite_when_the_teacher_is_certain():
    """A confident teacher's softmax underflows to exactly 0; the generator's gradient flows through the teacher's
    side of the KL too, and must stay finite (it was NaN through d(p log p)/dp at p = 0)."""
    t = torch.tensor([[200.0, 0.0, 0.0], [0.0, 150.0, 0.0]], requires_grad=True)
    s = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], requires_grad=True)
    assert (torch.softmax(t, 1) == 0).any()  # the case: probabilities that underflowed
    loss = adversarial_loss(s, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(t.grad).all() and torch.isfinite(s.grad).all()
    ref = (torch.softmax(t, 1) * (torch.log_softmax(t, 1) - torch.log_softmax(s, 1))).sum(1).clamp(max=5.0)
    assert loss.item() == pytest.approx(-ref.mean().item(), rel=1e-6)


def test_entropy_balance_prefers_balanced_predictions():
    balanced = torch.eye(4).repeat(4, 1) * 10
    one_class = torch.zeros(16, 4)
    one_class[:, 0] = 10
    assert entropy_balance_loss(balanced) < entropy_balance_loss(one_class)


def test_collapse_detection():
    one = torch.zeros(100, 10)
    one[:, 3] = 1
    assert is_collapsed(class_stats(one, 10), 10)
    bal = torch.eye(10).repeat(10, 1)
    stats = class_stats(bal, 10)
    assert stats["max_class_frac"] == pytest.approx(0.1)
    assert not is_collapsed(stats, 10)


def test_teacher_without_bn_warns_once_and_still_inverts():
    torch.manual_seed(0)
    teacher = tiny_cnn(bn=False).eval()
    with pytest.warns(UserWarning, match="no BatchNorm"):
        inv = TeacherInverter(teacher, 4)
    synth = GeneratorSynthesizer(GeneratorConfig(batch_size=16, nz=8, ngf=8, g_steps=2), inv, SHAPE)
    batch = synth.synthesize(tiny_cnn(), adversarial=True)
    assert batch.images.shape == (16, *SHAPE)
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    assert batch.metrics["loss_bn"] == 0.0 and batch.metrics["loss_oh"] > 0


def test_generator_synthesis_loss_decreases_with_meta_learning():
    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bn_momentum=0.0, bf16=False)
    cfg = GeneratorConfig(batch_size=32, nz=16, ngf=8, g_steps=3, lr_g=0.02, adv=0.0)
    synth = GeneratorSynthesizer(cfg, inv, SHAPE)
    student = tiny_cnn()
    losses = [synth.synthesize(student, adversarial=False).metrics["loss_synth"] for _ in range(40)]
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    # the meta-generator itself has learned: its own samples now look like the targeted classes
    with torch.no_grad():
        x = synth.generator(torch.randn(64, 16), torch.arange(64) % 4)
    assert x.shape == (64, *SHAPE)


def test_pixel_inversion_makes_the_teacher_predict_the_targets():
    torch.manual_seed(0)
    teacher = trained_tiny_teacher()
    inv = TeacherInverter(teacher, 4, bf16=False)
    synth = PixelSynthesizer(PixelConfig(batch_size=32, iterations=100, lr=0.2, adv=0.0, tv=0.0), inv, SHAPE)
    batch = synth.synthesize(tiny_cnn(), adversarial=False)
    with torch.no_grad():
        acc = (teacher(batch.images).argmax(1) == batch.targets).float().mean().item()
        ce = F.cross_entropy(teacher(batch.images), batch.targets).item()
        ce_noise = F.cross_entropy(teacher(torch.rand(32, *SHAPE)), batch.targets).item()
    assert acc >= 0.7 and ce < 0.5 * ce_noise
