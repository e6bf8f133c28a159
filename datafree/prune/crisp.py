"""CRISP: class-aware pruning to hybrid N:M + block sparsity (Aggarwal, Binici & Mitra, "CRISP: Hybrid
Structured Sparsity for Class-aware Model Pruning", DATE 2024), data-free.

A user needs only a few of the model's classes.  CRISP keeps the weights that matter for those classes,
in a pattern hardware can skip: fine-grained N:M (2:4) inside coarse B x B blocks that are removed whole
(datafree.prune.sparsity: the GEMM view, N:M along input channels, the same block count per block-row).

Algorithm (the paper's Sec. III and its reference code), on images of the user's classes only:
1. class-aware saliency of every weight, S = |W (.) mean_t |dL_t/dW||, the gradient averaged over the
   fine-tuning iterations of the previous phase (first-order Taylor importance of the class-aware loss);
   an initial phase gathers it on the dense model (the paper trains it there too; on synthetic images
   that only moves the dense model away from itself: loss 0.22 -> 0.36 in 120 steps on ResNet-56);
2. step k = 0..K: block sparsity grows linearly to its target (k = 0: N:M only).  A layer's block scores
   are the saliency summed over each block (N:M-masked); each block-row is sorted, and rank position j of
   layer l scores its block-rows' j-th best blocks; positions go globally, lowest score first, until the
   target share of blocks is gone, so layer l keeps K_l blocks in every block-row (at least one).  Block
   masks only ever shrink.  Deviation: the reference thresholds the *sum* over block-rows and counts
   positions, not blocks; positions of layers with few block-rows then go cheaply and the share of blocks
   removed misses the target (ResNet-56, |W| saliency, target 0.5: 0.34 removed).  Here a position scores
   its mean block and the count is in blocks;
3. N:M: within the kept blocks, the N most salient of every M weights (recomputed each step from the
   dense weights, which SR-STE keeps training, so a pruned weight can come back);
4. fine-tune with the masks applied (SR-STE gradient, decay 2e-4) for the step's iterations, gathering
   the gradient for the next step's saliency.
The first layer is left dense (3 input channels), the classifier is N:M-pruned but not block-pruned.

Data-free deviations: the images are synthetic (the model inverted for the user's classes, BN-statistics
matching - ``datafree.quant.calib.synthetic_calibration``), 128 per class instead of 256 real ones; the
loss is cross-entropy on the dense model's labels plus KD from its logits (T = 4) instead of
cross-entropy on real labels.  BatchNorm: fine-tuning batches neither update its statistics nor train
its affine weights (batches of a few classes would skew them; with the statistics frozen, SGD at lr 0.01
diverged within 5 steps on ResNet-56), but after every mask change the statistics are re-estimated on
the whole image set (``bn_recalibrate``): pruning shifts each layer's output statistics, and BN frozen
at the dense model's compounds the shift layer after layer (ResNet-56, 2:4 then 25 % blocks, 30 steps
each: fine-tuning loss at the end of each phase 2.35 / 6.76 with it, 6.78 / 13.2 without).  lr 0.003
ended its phases at a lower fine-tuning loss than 0.001 (1.74 / 3.84 against 1.77 / 5.20, 60 steps each).
Choices were made on the fine-tuning loss on synthetic images, never on held-out accuracy.
``saliency="magnitude"`` (|W|, class-agnostic) is the ablation with the same pattern and fine-tuning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from datafree.data.augment import random_crop_flip
from datafree.distill.kd import kd_loss
from datafree.errors import DatafreeError
from datafree.io.budget import Stopwatch, cosine, parse_duration
from datafree.precision import channels_last_works
from datafree.progress import Progress
from datafree.prune.sparsity import Masked, block_mask, block_ok, block_scores, is_nm, nm_mask, nm_ok


@dataclass
class CRISPConfig:
    classes: list[int] | None = None  # the user's classes (None: all)
    n: int = 2
    m: int = 4
    block: int = 16
    block_sparsity: float = 0.5  # final share of blocks removed in the block-pruned layers
    steps: int = 5  # block-sparsity increments after the N:M-only step
    iterations: int = 100  # fine-tuning iterations per phase (initial + N:M-only + steps)
    budget: str | None = None  # wall-clock for the whole method instead (held-out evaluation excluded)
    batch_size: int = 64
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    kd_weight: float = 1.0
    srste_decay: float = 2e-4
    saliency: str = "crisp"  # crisp (class-aware gradient x weight) | magnitude (|W|, class-agnostic)
    bn_recalibrate: bool = True  # re-estimate BN statistics on the images after every mask change
    samples_per_class: int = 128  # synthetic images per user class (the paper: 256 real ones)
    seed: int = 0
    skip: list[str] = field(default_factory=list)  # module names left dense

    def __post_init__(self) -> None:
        if isinstance(self.skip, str):  # skip=a,b from a command line: names, not one substring
            self.skip = [n.strip() for n in self.skip.split(",") if n.strip()]
        if not 0 < self.n < self.m:
            raise DatafreeError(f"N:M needs 0 < N < M, got {self.n}:{self.m}")
        if not 0.0 <= self.block_sparsity < 1.0:
            raise DatafreeError(f"block_sparsity must be in [0, 1), got {self.block_sparsity}")
        if self.saliency not in ("crisp", "magnitude"):
            raise DatafreeError(f"unknown saliency '{self.saliency}': use crisp or magnitude")
        if self.steps < 1 or self.iterations < 1 or self.block < 1 or self.batch_size < 1:
            raise DatafreeError("steps, iterations, block and batch_size must be positive")
        if not (self.lr >= 0 and self.temperature > 0 and 0 <= self.momentum < 1):  # lr 0: masks without fine-tuning
            raise DatafreeError(f"CRISP needs lr >= 0, temperature > 0 and 0 <= momentum < 1, got {self.lr}, "
                                f"{self.temperature}, {self.momentum}")
        if self.budget is not None and parse_duration(self.budget) <= 0:
            raise DatafreeError(f"--budget must be a positive duration such as 10m, got {self.budget!r}")


def prunable(model: nn.Module, cfg: CRISPConfig) -> tuple[list[tuple[str, nn.Module]], set[str], set[str]]:
    """(layers, N:M layer names, block layer names).  The model's first layer dense, its last N:M only (whatever
    ``skip`` leaves dense besides)."""
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "groups", 1) == 1]
    if len(layers) < 2:
        raise DatafreeError(f"CRISP prunes Conv2d/Linear layers (not grouped ones) and keeps the first one dense; this "
                            f"model has {len(layers)}: give a model with at least two")
    unknown = [n for n in cfg.skip if n not in dict(layers)]
    if unknown:
        raise DatafreeError(f"skip names '{unknown[0]}', not one of the model's Conv2d/Linear layers (its first "
                            f"'{layers[0][0]}', its last '{layers[-1][0]}')")
    body = layers[1:]
    nm = {n for n, m in body if n not in cfg.skip and nm_ok(m.weight, cfg.m)}
    blk = {n for n, m in body[:-1] if n not in cfg.skip and block_ok(m.weight, cfg.block)}
    return layers, nm, blk


def sparsity_stats(model: nn.Module) -> dict:
    """Count and zero share of the Conv2d/Linear weights."""
    total = zeros = 0
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            total += mod.weight.numel()
            zeros += int((mod.weight == 0).sum())
    return {"weights": total, "zeros": zeros, "sparsity": zeros / max(1, total), "density": 1 - zeros / max(1, total)}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``x`` (train-mode forward
    passes, no gradient).  Pruning changes each layer's output statistics; BN frozen at the dense model's
    shrinks or inflates the activations layer after layer."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()


class CRISP:
    """Prunes ``model`` in place; ``teacher`` (a frozen dense copy) gives the labels and KD targets."""

    def __init__(self, cfg: CRISPConfig) -> None:
        self.cfg = cfg

    def prune(self, model: nn.Module, teacher: nn.Module, x: torch.Tensor,
              evaluate: Callable[[nn.Module], dict] | None = None, log: Callable[[dict], None] | None = None,
              progress: bool = True, checkpoint: Callable[[dict], None] | None = None,
              state: dict | None = None) -> tuple[nn.Module, list[dict]]:
        """``checkpoint`` receives the whole state after every phase; ``state`` (one it received) resumes
        after that phase and ends with the weights an uninterrupted run gives."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        # NHWC: ResNet-56 forward + backward on 64 CIFAR images took 0.43 s instead of 0.57 s (2 AVX2 cores);
        # a model that flattens with .view cannot take it and stays NCHW
        self._cl = channels_last_works(model, x)
        layout = torch.channels_last if self._cl else torch.contiguous_format
        model.to(memory_format=layout)
        teacher.to(memory_format=layout)
        layers, nm_names, blk_names = prunable(model, cfg)
        mods = {n: m for n, m in layers if n in nm_names | blk_names}
        if not mods:
            raise DatafreeError(f"no layer can take {cfg.n}:{cfg.m} or {cfg.block}x{cfg.block} blocks "
                                "(input channels must be a multiple of M)")
        if cfg.block_sparsity > 0 and not blk_names:
            warnings.warn(f"no layer of this model can take {cfg.block}x{cfg.block} blocks (its weight matrix, output "
                          f"rows x input channels x kernel, must divide into them; the first and last layers never "
                          f"do): only {cfg.n}:{cfg.m} is applied; a smaller --block may fit", stacklevel=2)
        for mod in mods.values():
            parametrize.register_parametrization(mod, "weight", Masked(torch.ones_like(mod.weight), cfg.srste_decay))
        dense = {n: m.parametrizations.weight.original for n, m in mods.items()}
        bmask = {n: torch.ones_like(w) for n, w in dense.items()}
        teacher.eval()
        phases = cfg.steps + 2  # initial (dense) + N:M only + block increments
        budget_s = parse_duration(cfg.budget) if cfg.budget is not None else None
        bn = {id(p) for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)
              for p in mod.parameters()}
        params = [p for p in model.parameters() if id(p) not in bn]  # BN frozen whole: statistics and affine
        opt = torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        history, start, clock = [], 0, Stopwatch()
        bar = Progress("crisp", progress)
        grad = {n: torch.zeros_like(w) for n, w in dense.items()}
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            bmask, grad, history = state["bmask"], state["grad"], list(state["history"])
            start, clock = state["phase"] + 1, Stopwatch(state["elapsed_s"])
            torch.set_rng_state(state["rng"])
        for phase in range(start, phases):
            clock.start()
            # the budget covers all of the method's work (saliency, masks, BN re-estimation, fine-tuning),
            # not the held-out evaluation: each phase fine-tunes until its share of what is left is spent
            # (a budget already spent on resume: one step per remaining phase, at the cosine's end)
            phase_end = (clock.elapsed + (budget_s - clock.elapsed) / (phases - phase)) if budget_s is not None \
                else None
            target = 0.0 if phase == 0 else cfg.block_sparsity * (phase - 1) / cfg.steps
            if phase > 0:
                sal = self._saliency(dense, grad)
                self._set_masks(mods, dense, sal, bmask, nm_names, blk_names, target)
                if cfg.bn_recalibrate:
                    recalibrate_bn(model, x)
            for g in grad.values():
                g.zero_()
            steps, losses = 0, []
            while True:
                if phase_end is not None:
                    if clock.elapsed >= phase_end and steps > 0:
                        break
                elif steps >= cfg.iterations:
                    break
                frac = (min(1.0, clock.elapsed / budget_s) if budget_s is not None
                        else (phase + steps / cfg.iterations) / phases)
                for group in opt.param_groups:  # cosine over the whole run
                    group["lr"] = cfg.lr * cosine(frac)
                loss = self._step(model, teacher, x, opt, update=phase > 0)
                losses.append(loss)
                for n, w in dense.items():
                    grad[n] += w.grad.abs()
                steps += 1
                bar.update(frac, clock.elapsed, f"phase {phase + 1}/{phases} loss {loss:.3f}")
            for g in grad.values():
                g /= max(1, steps)
            row = {"phase": phase, "block_sparsity_target": round(target, 4), "iterations": steps,
                   "loss_first": round(sum(losses[:10]) / len(losses[:10]), 5),  # the phase's first 10 steps
                   "loss": round(sum(losses[-10:]) / len(losses[-10:]), 5),  # its last 10
                   "elapsed_s": round(clock.elapsed, 2),  # the method's time, evaluation excluded
                   **self._pattern_stats(mods, bmask, blk_names)}
            clock.pause()
            if evaluate is not None:
                row.update(evaluate(model))
            history.append(row)
            if log is not None:
                log(row)
            if checkpoint is not None:
                checkpoint({"phase": phase, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "bmask": bmask, "grad": grad, "history": history, "elapsed_s": row["elapsed_s"],
                            "rng": torch.get_rng_state()})
        bar.close()
        for mod in mods.values():  # bake the masks in: a plain model whose zeros are the pattern
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        model.to(memory_format=torch.contiguous_format)
        teacher.to(memory_format=torch.contiguous_format)  # the caller's module as it came
        bad = [n for n in nm_names if not is_nm(mods[n].weight, cfg.n, cfg.m)]
        if bad:
            raise DatafreeError(f"internal error: layers {bad[:3]} are not {cfg.n}:{cfg.m} after pruning")
        return model, history

    def _step(self, model: nn.Module, teacher: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer,
              update: bool = True) -> float:
        cfg = self.cfg
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),))
        xb = random_crop_flip(x[idx], padding=max(1, x.shape[-1] // 8))
        if self._cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            t = teacher(xb).float()
        model.eval()  # BN frozen (data-free: synthetic batches of a few classes would skew its statistics)
        s = model(xb).float()
        loss = F.cross_entropy(s, t.argmax(1)) + cfg.kd_weight * kd_loss(s, t, cfg.temperature)
        if not torch.isfinite(loss):
            raise DatafreeError("the pruning fine-tuning loss became non-finite; lower --lr")
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if update:
            opt.step()
        return float(loss.detach())

    def _saliency(self, dense: dict, grad: dict) -> dict:
        if self.cfg.saliency == "magnitude":
            return {n: w.detach().abs() for n, w in dense.items()}
        return {n: (w.detach() * grad[n]).abs() for n, w in dense.items()}

    def _set_masks(self, mods: dict, dense: dict, sal: dict, bmask: dict, nm_names: set, blk_names: set,
                   target: float) -> None:
        cfg = self.cfg
        def nm_masks() -> dict:  # N:M inside the blocks kept so far
            return {n: (nm_mask(sal[n] * bmask[n], cfg.n, cfg.m) if n in nm_names else torch.ones_like(sal[n]))
                    for n in dense}

        nm = nm_masks()
        if target > 0 and blk_names:
            names = sorted(blk_names)
            scores = {n: block_scores(sal[n] * nm[n] * bmask[n], cfg.block) for n in names}
            ranks = {n: scores[n].sort(1, descending=True).values.mean(0) for n in names}  # per rank position
            keep = {n: len(ranks[n]) for n in names}
            need, removed = target * sum(scores[n].numel() for n in names), 0
            # the least important positions go first, by their mean block score, until the share of *blocks*
            # removed reaches the target; a layer keeps its best position
            order = sorted((float(ranks[n][j]), n) for n in names for j in range(1, len(ranks[n])))
            for _, name in order:
                if removed >= need:
                    break
                keep[name] -= 1
                removed += scores[name].shape[0]
            for n in names:
                bmask[n] = bmask[n] * block_mask(scores[n], keep[n], cfg.block, sal[n].shape)
            # N:M again inside the final blocks (a block removal changes no group's choice: it zeroes it)
            nm = nm_masks()
        for n, mod in mods.items():
            mod.parametrizations.weight[0].mask.copy_(nm[n] * bmask[n])

    @staticmethod
    def _pattern_stats(mods: dict, bmask: dict, blk_names: set) -> dict:
        total = sum(m.parametrizations.weight[0].mask.numel() for m in mods.values())
        kept = sum(float(m.parametrizations.weight[0].mask.sum()) for m in mods.values())
        bt = sum(bmask[n].numel() for n in blk_names)
        bk = sum(float(bmask[n].sum()) for n in blk_names)
        return {"pruned_layer_density": round(kept / max(1, total), 5),
                "block_sparsity": round(1 - bk / bt, 5) if bt else 0.0}
