"""What every synthesizer shares: the frozen teacher seen through its normalization, the
BatchNorm-statistics hooks and the inversion losses (DAFL / DeepInversion / CMI / Fast-DFKD)."""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from datafree.data.augment import normalize
from datafree.errors import DatafreeError
from datafree.precision import compile_or_none, resolve_bf16
from datafree.types import Floats


@dataclass
class SynthBatch:
    images: torch.Tensor  # N x C x H x W in [0, 1]
    targets: torch.Tensor  # the classes the inversion aimed at
    metrics: dict = field(default_factory=dict)


class Synthesizer(Protocol):
    """Turns the frozen teacher (and the current student, for the adversarial term) into images."""

    def synthesize(self, student: nn.Module, adversarial: bool = True) -> SynthBatch:
        """A new batch; ``adversarial=False`` before the student has trained (its disagreement is noise)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class InversionSynthesizer:
    """Shared frame of a synthesis call: the student is put in eval mode (the adversarial term probes its
    inference behaviour), the teacher's BN hooks are armed, and both are restored afterwards.  With a guide
    in guided mode (``synthesis.guide``, set by the engine) ``_run`` adds the feature-alignment loss and the
    frame then updates the discriminator on the batch it returns (outside the BN hooks)."""

    inv: TeacherInverter
    calls: int = 0
    supports_guide = True  # the engine refuses guided mode for a synthesizer that sets this to False
    guide = None  # a synthesis.guide.Guide, or None

    @property
    def guided(self) -> bool:
        return self.guide is not None and self.guide.guided

    def synthesize(self, student: nn.Module, adversarial: bool = True) -> SynthBatch:
        was_training = student.training
        student.eval()
        try:
            with self.inv.inverting():
                out = self._run(student, adversarial)
        finally:
            student.train(was_training)
        if self.guided:
            out.metrics.update(self.guide.update_discriminator(out.images, out.targets))
        self.calls += 1
        return out

    def _run(self, student: nn.Module, adversarial: bool) -> SynthBatch:
        raise NotImplementedError

    def _teacher_pass(self, xa: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits on the (augmented) batch and, when guided, the unweighted L_FA of its
        penultimate features towards the guide samples of classes ``y`` (None when not guided)."""
        if not self.guided:
            return self.inv.logits(xa), None
        if not self.guide.needs_features:  # align=embedding reads the images, not the teacher's features
            return self.inv.logits(xa), self.guide.align_loss(None, y, xa)
        t, feats = self.inv.logits_and_features(xa)
        return t, self.guide.align_loss(feats, y, xa)

    def _guide_state(self) -> dict:
        return self.guide.state_dict() if self.guide is not None else {}

    def _load_guide_state(self, state: dict) -> None:
        if self.guide is not None:
            self.guide.load_state_dict(state.get("guide", {}))


def bn_term(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, past_mean: torch.Tensor,
            past_var: torch.Tensor, momentum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One BN layer's term ||mu - mu_running||_2 + ||var - var_running||_2, where mu, var are the batch
    statistics of its input ``x`` blended as (1 - momentum) * batch + momentum * past (``momentum`` a 0-d
    tensor, 0 for none); returns the term and the blended mean and variance (detached)."""
    x = x.float()
    mean = (1 - momentum) * x.mean((0, 2, 3)) + momentum * past_mean
    var = (1 - momentum) * x.var((0, 2, 3), unbiased=False) + momentum * past_var
    loss = torch.norm(running_mean - mean, 2) + torch.norm(running_var - var, 2)
    return loss, mean.detach(), var.detach()


FUSE_MIN_NUMEL = 1 << 20  # a CIFAR ResNet's first stage at batch 64 engages it; LeNet (batch <= 128), tests stay eager
_FUSED = {"used": False, "broken": False}


@functools.cache
def _fast_bn_term():
    """``bn_term`` fused by torch.compile, forward and backward (``datafree.precision.compile_or_none``), or
    None.  Eager, the hooks' passes over every activation and their gradient took 0.32 s of a 0.73 s resnet56
    forward + backward on 64 images, about a fifth of a generator step; fused, a generator synthesis call of 64
    images took 12.7 % less time and the VAE replay's nudging 20.0 % (benchmarks/synthesis_speed.py; 8-14 % and
    15-22 % over six runs while developing it).  Two graphs: inductor splits reductions at 4,096 elements."""

    def warmup(fn):  # distinct tensors and a size past inductor's small-size guards: the graph runs reuse
        x = torch.randn(8, 6, 24, 24).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        fn(x, torch.zeros(6), torch.ones(6), torch.zeros(6), torch.zeros(6), torch.tensor(0.5))[0].backward()

    return compile_or_none(bn_term, warmup)


def _fused_bn_term(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The compiled term; should a later graph variant fail to compile mid-run, eager from then on."""
    if not _FUSED["broken"]:
        try:
            out = _fast_bn_term()(*args)
            _FUSED["used"] = True
            return out
        except Exception:  # noqa: BLE001 - a compiler failure must not end the run
            _FUSED["broken"] = True
            warnings.warn("the fused BN-statistics term failed to compile; inverting eagerly from here",
                          stacklevel=2)
    return bn_term(*args)


def fused_bn_used() -> bool:
    """Whether this process has inverted with the fused BN term (and it never fell back): runs with and
    without it synthesize at different rates on the same machine."""
    return _FUSED["used"] and not _FUSED["broken"]


@dataclass
class Fusing:
    """Shared by one inverter's hooks: whether the fused term may be used, and whether it is (engaged at the
    first activation of FUSE_MIN_NUMEL elements; from then on every layer of that model uses it)."""

    allowed: bool = True
    engaged: bool = False


class BNStatsHook:
    """DeepInversion's feature regulariser (Yin et al. CVPR 2020, Eq. 4) for one BN layer:
    ||mu_batch - mu_running||_2 + ||var_batch - var_running||_2 of the layer's input (``bn_term``).
    With ``momentum`` > 0 the batch statistics are blended with those of past batches before the
    comparison (Fast-DFKD, Fang et al. AAAI 2022, Sec. 3.3), so that a few-step synthesis need not
    match the statistics with one batch alone."""

    def __init__(self, bn: nn.BatchNorm2d, momentum: float = 0.0, fusing: Fusing | None = None) -> None:
        self.bn, self.momentum = bn, momentum
        self.fusing = fusing or Fusing()  # torch.compile'd where it pays (``_fast_bn_term``)
        # the unblended case's "past": two tensors (an alias would be one more compiled graph), made once
        self.no_past = (torch.zeros_like(bn.running_mean), torch.zeros_like(bn.running_mean))
        self.active = False  # only synthesis pays for the statistics, not the KD forward passes
        self.loss: torch.Tensor | None = None
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.mmt: tuple[torch.Tensor, torch.Tensor] | None = None
        self.handle = bn.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not self.active:
            return
        x = inputs[0]
        if self.mmt is not None and self.momentum > 0:
            past, momentum = self.mmt, torch.tensor(float(self.momentum))
        else:  # weight 0: exactly the batch statistics
            past, momentum = self.no_past, torch.zeros(())
        f, grad = self.fusing, x.requires_grad and torch.is_grad_enabled()  # no backward: nothing to gain
        if f.allowed and not f.engaged and grad and x.numel() >= FUSE_MIN_NUMEL:
            f.engaged = _fast_bn_term() is not None
        term = _fused_bn_term if f.engaged and grad else bn_term
        self.loss, *last = term(x, self.bn.running_mean, self.bn.running_var, *past, momentum)
        self.last = tuple(last)

    def commit(self) -> None:
        """Remember the statistics of the last synthesized batch (Fast-DFKD's momentum buffer)."""
        if self.last is not None:
            self.mmt = self.last

    def remove(self) -> None:
        self.handle.remove()


class TeacherInverter:
    """The frozen teacher with its hooks; computes the inversion losses for a batch in [0, 1]."""

    def __init__(self, teacher: nn.Module, num_classes: int, mean: Floats | None = None, std: Floats | None = None,
                 bn_momentum: float = 0.0, bf16: bool | str = "auto", channels_last: bool = False,
                 fused: bool = True) -> None:
        self.teacher, self.num_classes = teacher.eval(), num_classes
        self.target_classes: torch.Tensor | None = None  # invert only these classes (None: all)
        self.mean, self.std, self.channels_last = mean, std, channels_last
        self.bf16 = resolve_bf16(bf16)  # auto: only where the CPU runs bf16 fast (datafree.precision)
        for p in teacher.parameters():
            p.requires_grad_(False)
        bns = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        if not bns:
            warnings.warn("the teacher has no BatchNorm2d layers: the BN-statistics loss is dropped, "
                          "the other inversion losses stay", stacklevel=2)
        fusing = Fusing(allowed=fused)
        self.hooks = [BNStatsHook(bn, bn_momentum, fusing) for bn in bns]
        # penultimate features = the input of the last Linear layer (the classifier head), when there is one
        heads = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
        self.features: torch.Tensor | None = None
        if heads:
            heads[-1].register_forward_pre_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, args: tuple) -> None:
        self.features = args[0].flatten(1)

    @contextlib.contextmanager
    def inverting(self, momentum: float | None = None) -> Iterator[TeacherInverter]:
        """Enable the BN-statistics hooks for the duration of one synthesis call (``momentum`` overrides the
        blending with past batches' statistics, e.g. 0 to match one batch on its own)."""
        saved = [h.momentum for h in self.hooks]
        for h in self.hooks:
            h.active = True
            if momentum is not None:
                h.momentum = momentum
        try:
            yield self
        finally:
            for h, m in zip(self.hooks, saved):
                h.active, h.momentum = False, m

    def autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def logits(self, x01: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        x = normalize(x01, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return (model or self.teacher)(x).float()

    @torch.no_grad()
    def view_logits(self, x01: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for each image and its mirror, N x 2 x C: what a stored sample caches, so
        that the mirror augmentation of a student step needs no teacher pass."""
        return torch.stack(self.logits(torch.cat([x01, x01.flip(3)])).chunk(2), 1)

    def logits_and_features(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher logits and penultimate features (the classifier head's input) of a batch in [0, 1]."""
        self.features = None
        t = self.logits(x01)
        if self.features is None:
            raise DatafreeError("guided inversion needs the teacher's penultimate features: its classifier must be "
                                "an nn.Linear layer")
        return t, self.features.float()

    def bn_loss(self) -> torch.Tensor:
        if not self.hooks:
            return torch.zeros(())
        return sum(h.loss for h in self.hooks)

    def commit_bn(self) -> None:
        for h in self.hooks:
            h.commit()

    def balanced_targets(self, n: int) -> torch.Tensor:
        """Class-balanced target classes in random order (class balance by construction)."""
        pool = self.target_classes if self.target_classes is not None else torch.arange(self.num_classes)
        t = pool[torch.arange(n) % len(pool)]
        return t[torch.randperm(n)]


def finite(loss: torch.Tensor) -> float:
    """``loss.item()``, or one clear error if inversion diverged (NaN/inf)."""
    value = loss.item()
    if not math.isfinite(value):
        raise DatafreeError(f"the synthesis loss became {value}: the teacher gives non-finite outputs "
                            "(check its weights) or the synthesis learning rate is too high")
    return value


def entropy_balance_loss(t_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information-entropy term (Chen et al. ICCV 2019, Eq. 5): minus the entropy of the
    batch-mean teacher prediction; minimal when all classes are predicted equally often."""
    p = F.softmax(t_logits, 1).mean(0)
    return (p * torch.log(p + 1e-8)).sum()


def adversarial_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, cap: float = 5.0) -> torch.Tensor:
    """Student-teacher disagreement to maximise (CMI / Fast-DFKD form): minus the KL(teacher||student)
    on samples where the two still agree on the class, so the generator seeks the decision boundary
    without producing samples the teacher itself finds ambiguous.  Deviation: the per-sample KL is
    capped at ``cap`` nats - unbounded, a young student's eval-mode BN lets it explode (seen: -3e5)
    and drown the other terms.  The teacher's side is given as log-probabilities: the generator's gradient
    flows through it too, and through a probability that underflowed to 0 (a confident teacher) the plain
    form's d(p log p)/dp = log 0 + 1 made the whole step NaN."""
    agree = (s_logits.argmax(1) == t_logits.argmax(1)).float()
    kl = F.kl_div(F.log_softmax(s_logits, 1), F.log_softmax(t_logits, 1), reduction="none", log_target=True).sum(1)
    return -(kl.clamp(max=cap) * agree).mean()


def class_stats(t_logits: torch.Tensor, num_classes: int) -> dict:
    """Share of the most frequent teacher class and the effective class count exp(H) of the batch -
    the collapse indicators logged every round."""
    counts = torch.bincount(t_logits.argmax(1), minlength=num_classes).float()
    p = counts / counts.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return {"max_class_frac": float(p.max()), "effective_classes": float(h.exp())}


def is_collapsed(stats: dict, num_classes: int) -> bool:
    """All (or nearly all) samples in one class, or fewer than a quarter of the classes represented."""
    return stats["max_class_frac"] > max(0.5, 3.0 / num_classes) or stats["effective_classes"] < num_classes / 4
