"""Generator inversion, Fast-DFKD style (Fang et al., "Up to 100x Faster Data-free Knowledge
Distillation", AAAI 2022, Algorithm 1), with the loss family of DAFL / DeepInversion / CMI.

Per call:
1. start a *fast* generator from the meta-generator's weights (the learned common initialisation);
   draw latents z and class-balanced targets y;
2. take ``g_steps`` Adam steps on (fast generator, z) minimising
       bn * L_BN  +  oh * CE(T(x), y)  +  balance * L_entropy  +  adv * L_adv(S, T)
   on differentiably augmented x = G(z) (random crop + flip);
3. keep the batch with the lowest loss as the new synthetic samples;
4. meta-update of the meta-generator (Sec. 3.2): first-order MAML - the sum of the fast generator's
   gradients over the inner steps (the authors' default, ``meta="fomaml"``) - or Reptile
   (grad = theta - theta_fast, ``meta="reptile"``), applied by Adam with lr = lr_g * g_steps.
The BN momentum blending of Sec. 3.3 is applied to all BN layers.  Deviations: targets are
class-balanced rather than uniformly random; the generator is class-conditional by default (the
one-hot target is appended to z; ``conditional=False`` for the paper's unconditional G): with the few
generator steps a CPU budget affords, an unconditional G cannot learn which class each z must become
and the one-hot loss stalls (measured: CE ~7 after 40 calls); with a guide (``synthesis.guide``) the
feature-alignment loss L_FA joins the inner loss; the loss weights are bn=3, oh=1 (paper
scripts: 10 / 0.4-0.5), since at bn/oh = 20 the one-hot term barely moves within a CPU budget
(measured on resnet56: CE 6.6 vs 0.6 after 60 s); and everything runs under bf16 autocast where the CPU
runs it fast (datafree.precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datafree.data.augment import random_crop_flip
from datafree.errors import DatafreeError
from datafree.models.generator import Generator
from datafree.synthesis.base import (
    InversionSynthesizer,
    SynthBatch,
    TeacherInverter,
    adversarial_loss,
    class_stats,
    entropy_balance_loss,
    finite,
)


@dataclass
class GeneratorConfig:
    batch_size: int = 64
    g_steps: int = 5
    nz: int = 256
    ngf: int = 64
    lr_g: float = 3e-3
    lr_z: float = 0.01
    bn: float = 3.0
    oh: float = 1.0
    balance: float = 0.0
    adv: float = 1.1
    bn_momentum: float = 0.9
    meta: str = "fomaml"  # fomaml | reptile | none
    conditional: bool = True
    augment: bool = True

    def __post_init__(self) -> None:
        if min(self.batch_size, self.g_steps, self.nz, self.ngf) < 1 or not (self.lr_g > 0 and self.lr_z >= 0):
            raise DatafreeError("the generator needs batch_size, g_steps, nz, ngf >= 1, lr_g > 0 and lr_z >= 0, got "
                                f"{self.batch_size}, {self.g_steps}, {self.nz}, {self.ngf}, {self.lr_g}, {self.lr_z}")
        if not 0 <= self.bn_momentum < 1:
            raise DatafreeError(f"the generator's bn_momentum must be in [0, 1), got {self.bn_momentum}")


class GeneratorSynthesizer(InversionSynthesizer):
    def __init__(self, cfg: GeneratorConfig, inverter: TeacherInverter, input_shape: tuple[int, ...]) -> None:
        if cfg.meta not in ("fomaml", "reptile", "none"):
            raise DatafreeError(f"generator meta must be fomaml, reptile or none, got '{cfg.meta}'")
        c, h, w = input_shape
        if h != w:
            raise DatafreeError(f"the generator makes square images; input shape {tuple(input_shape)} is not "
                                "(use --synthesizer pixel)")
        if h % 4:
            raise DatafreeError(f"the generator needs an image size divisible by 4, got {h} (use --synthesizer pixel)")
        self.cfg, self.inv = cfg, inverter
        nc = inverter.num_classes if cfg.conditional else 0
        self.generator = Generator(cfg.nz, cfg.ngf, h, c, nc)
        self.fast = Generator(cfg.nz, cfg.ngf, h, c, nc)
        if inverter.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.fast.to(memory_format=torch.channels_last)
        self.meta_opt = torch.optim.Adam(self.generator.parameters(), cfg.lr_g * cfg.g_steps, betas=(0.5, 0.999))
        self.calls = 0

    def _run(self, student: nn.Module, adversarial: bool) -> SynthBatch:
        cfg, inv = self.cfg, self.inv
        self.fast.load_state_dict(self.generator.state_dict())
        self.fast.train()
        z = torch.randn(cfg.batch_size, cfg.nz, requires_grad=True)
        y = inv.balanced_targets(cfg.batch_size)
        params = list(self.fast.parameters())
        opt = torch.optim.Adam([{"params": params}, {"params": [z], "lr": cfg.lr_z}], cfg.lr_g, betas=(0.5, 0.999))
        best, best_loss, parts, w = None, float("inf"), {}, None
        meta_params = list(self.generator.parameters())
        self.meta_opt.zero_grad(set_to_none=False)
        for _ in range(cfg.g_steps):
            with inv.autocast():
                x = self.fast(z, y).float()
            xa = random_crop_flip(x) if cfg.augment else x
            t, l_align = self._teacher_pass(xa, y)
            l_bn = inv.bn_loss()
            l_oh = F.cross_entropy(t, y)
            l_bal = entropy_balance_loss(t) if cfg.balance else torch.zeros(())
            l_adv = adversarial_loss(inv.logits(xa, student), t) if cfg.adv and adversarial else torch.zeros(())
            loss = cfg.bn * l_bn + cfg.oh * l_oh + cfg.balance * l_bal + cfg.adv * l_adv
            if l_align is not None:
                if w is None:  # the call's first step sets it
                    w = self.guide.align_weight(loss, l_align, xa)
                loss = loss + w * l_align
            value = finite(loss)
            grads = torch.autograd.grad(loss, params + [z])  # no grads into teacher/student weights
            for p, g in zip(params + [z], grads):
                p.grad = g
            if cfg.meta == "fomaml":  # first-order MAML: accumulate the inner gradients
                for mp, g in zip(meta_params, grads):
                    mp.grad = g.clone() if mp.grad is None else mp.grad.add_(g)
            opt.step()
            if value < best_loss:
                best_loss, best = value, x.detach()
                parts = {"loss_bn": l_bn.item(), "loss_oh": l_oh.item(), "loss_adv": l_adv.item(),
                         **class_stats(t.detach(), inv.num_classes)}
                if l_align is not None:
                    parts.update(loss_align=l_align.item(), align_weight=w)
        inv.commit_bn()
        if cfg.meta == "reptile":
            for p, fp in zip(meta_params, self.fast.parameters()):
                p.grad = p.detach() - fp.detach()
        if cfg.meta in ("fomaml", "reptile"):
            self.meta_opt.step()
        else:
            self.generator.load_state_dict(self.fast.state_dict())
        return SynthBatch(best, y, {"loss_synth": best_loss, **parts})

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "meta_opt": self.meta_opt.state_dict(),
                "calls": self.calls, "bn_mmt": [h.mmt for h in self.inv.hooks],
                "guide": self._guide_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_opt.load_state_dict(state["meta_opt"])
        self.calls = state["calls"]
        for h, m in zip(self.inv.hooks, state["bn_mmt"]):
            h.mmt = m
        self._load_guide_state(state)
