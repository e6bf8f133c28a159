"""Condensed-sample-guided model inversion (Binici et al., "Condensed Data Expansion Using Model
Inversion for Knowledge Distillation", 2024), for a few condensed (or real, few-shot) images per class.

Training on the condensed samples alone is weak and simply mixing them with inverted samples fails
(a domain gap); instead they *guide* the inversion:
- a class-conditional discriminator D on the teacher's penultimate features (a projection
  discriminator, Miyato & Koyama 2018: D(f, y) = w . phi(f) + e_y . phi(f)) learns to tell the
  features of condensed samples of class y from those of synthetic samples aimed at class y, both
  under the same differentiable Siamese augmentation (DSA), so that a handful of images is not
  memorised and D cannot key on which side was augmented how:
      L_D = BCE(D(f_cond, y), 1) + BCE(D(f_syn, y), 0);
- the generator (or the pixels, ``--synthesizer pixel``) gets, on top of the inversion losses, the
  adversarial feature-alignment loss (weight ``adv``, 1 as in the paper's L_G = L_MI + L_FA)
      L_FA = BCE(D(f_syn, y), 1)
  which pulls each class's synthetic samples towards the condensed samples of that class in the
  teacher's feature space; classes without a guide image get no alignment term;
- every synthesized batch joins the pool, and the student trains with KD on synthetic and condensed
  samples, the condensed ones under DSA, as one set (the paper's synthetic U condensed): a share
  ``ratio`` of each student batch is condensed and one KD term covers the batch.
- D must not memorise the guide images: with one condensed image per class it does (CIFAR-10, resnet56:
  D's accuracy on its own batches went 0.88 -> 0.99 in four rounds at ipc 1, against 0.68 -> 0.83 at
  ipc 10), and a D that has memorised them pulls every synthetic sample of a class towards one point.
  As in the adaptive discriminator augmentation of Karras et al., "Training Generative Adversarial
  Networks with Limited Data" (NeurIPS 2020, Sec. 3), the overfitting heuristic r_t = E[sign(D(f_cond))]
  steers the strength of an augmentation every D input gets, generator side included, towards
  r_t = ``noise_target`` (0.6, ADA's value); the images are already under DSA at full strength, so the
  adapted augmentation is instance noise on the features (Sonderby et al. 2017): f + sigma * s * N(0, I),
  s the RMS of the guide images' features, sigma moved by ``noise_step`` per D update towards the
  target (``noise_target=none`` turns it off).
- D learns on DSA views but scores the generator's own crop+flip views in L_FA (a DSA view there would
  cost a second teacher pass per step).  D generalises across the two: after 6 rounds at ipc 1 its mean
  logit on synthetic DSA views was -1.66, on the crop+flip views -1.42, on guide DSA views +1.53.
- ``align="feature_matching"`` replaces the generator's BCE on D by feature matching (Salimans et al.,
  "Improved Techniques for Training GANs", NeurIPS 2016, Sec. 3.1) per class: each class's batch mean of
  D's hidden features phi(f) is pulled to the guide images' mean at D's last update (relative squared
  error), so a class's samples may spread around the guide images instead of each being pushed onto them.
  Probe (synthetic data only, no test image): 30 synthesis calls of the resnet56 inverter, ipc 1, teacher
  features of the last 12 batches; cosine of each class's mean with its guide image's feature / relative
  within-class spread: unguided 0.598 / 0.220, BCE weight 1 (the default) 0.611 / 0.229, BCE weight 10
  0.641 / 0.228, feature matching weight 1 0.610 / 0.225, weight 10 0.670 / 0.237.  At weight 1 neither
  form moves the synthetic features within the few generator steps a CPU budget affords.
- ``weighting="adaptive"``: why L_FA barely acts at weight 1 - its gradient on the images is 0.4 % (first call)
  to 8 % (60th call) of the BN term's (probe: resnet56, ipc 1).  Adaptive weighting (Esser et al. 2021, Eq. 7)
  makes it ``adv`` times the inversion losses' gradient.  Probe, synthetic only (40 calls, last 12 batches;
  cos to guide / BN loss / teacher agrees with target), ipc 1: unguided 0.602 / 40.1 / 0.773, fixed 1 0.612 /
  39.7 / 0.763, adaptive 0.1 0.621 / 39.2 / 0.789, 0.2 0.641 / 43.9 / 0.766, 0.3 0.656 / 51.3 / 0.751, 1.0
  0.813 / 88.0 / 0.421.  0.1 is the largest share that keeps the BN loss and the agreement at the unguided
  level.  Its 60-minute runs (``guided_adaptive_ipc1``) kept the weight at 2.0-4.2 and D's accuracy at 0.79-0.94,
  with no collapse, and lost to plain: slowcpu group 66.15 / 56.28 % (last / mean) against 66.48 / 56.69, main
  group 65.93 / 55.51 against 68.51 / 59.24 (the naive mix 68.78 / 59.75).  Not the default.
- ``labels="teacher"``: D and L_FA pair each guide image with the teacher's class for it instead of its label.
  The teacher reads our ipc-1 DM set (benchmarks/results/*/cifar10_condensed/condensed_ipc1.npz: periodic
  textures, one 8-pixel cell tiled, since one image matches the class-mean embedding at every cell of the
  embedding's 4x4 map) as other classes, 0 of 10 labels right at a mean confidence of 0.84 (ipc 10: 70 of 100;
  the published DM ipc-10 set 31 of 100).  With the given labels, L_FA pulls the samples the one-hot loss aims
  at class y towards features the teacher puts in another class: the two losses disagree (in the adaptive
  probe above, the teacher's agreement with the target fell from 0.77 to 0.42 at weight 1.0).  Paired with the
  teacher's class, the guidance agrees with the inversion losses; classes the teacher gives no guide image get
  no L_FA.  The student side is unchanged (its KD targets are the teacher's logits either way), and
  ``describe()`` reports the teacher's agreement with the labels in both modes.
  Measured once (benchmarks/results/bf16fastcpu/, 60 min, ipc 1, adaptive weight 0.1): 82.90 % last / 74.78 %
  mean against plain's 83.78 / 76.72 on the same machine, with 9 % slower synthesis (87 rounds against 98): not a
  gain, so it is not the default.
- ``align="embedding"``: Distribution Matching's own objective (Zhao & Bilen, WACV 2023, Eq. 4) as L_FA, with no
  discriminator: under a fresh random ConvNet-3 per generator step (width ``embed_width``, 32) and one Siamese DSA
  transformation, each class's mean embedding of the synthetic batch is pulled to the guide images'.
  Why: a DM image was made to carry exactly that - its class's real mean embedding under such networks - and not
  what the teacher reads (0 of 10 ipc-1 labels).  Probe, synthetic only (40 calls of the resnet56 inverter against
  a fixed resnet20, ipc 1, last 12 batches; class-mean distance to the guide under 8 held-out width-128 DM nets /
  BN loss / teacher agrees with target / s per call, bf16 AVX512 machine): unguided 0.185 / 40.1 / 0.783 / 2.43;
  adversarial adaptive 0.1 (the earlier form) 0.191 / 37.7 / 0.781 / 2.65; embedding adaptive 0.05 0.170 / 39.0 /
  0.837 / 2.54, 0.1 0.166 / 46.6 / 0.793, 0.2 0.169 / 65.7 / 0.724 (width 64 at 0.1: 0.166 / 48.4 / 0.784 / 3.11).
  0.05 is the largest share that keeps the BN loss and the agreement at the unguided level, and the only step
  this alignment adds - a width-32 net on 64 images, NCHW under bf16 (channels_last ran it 3x slower) - costs
  less than the discriminator's update.  Measured once (benchmarks/results/bf16cpu/, 60 min, ipc 1, adaptive
  0.05): 77.70 % last / 69.46 % mean against plain's 80.56 / 72.59 on the same machine, trailing it in every
  round from round 4 on, with as much synthesis (24.07 against 23.23 images/s); L_FA stayed at 0.23 all run.  A
  loss, so it is not the default.
``mode="mix"`` (the naive baseline) keeps only the last point, the way a user would simply add the
condensed samples to the synthetic pool: the student's data are the same, the generator is not guided,
so the two modes differ in the guidance alone.  ``kd_weight`` > 0 gives the condensed samples a KD
term of their own, L_S = KL(synthetic) + kd_weight * KL(condensed) (weight 1 was our first default:
on CIFAR-10 ipc 10 it gave 100 images half the student's gradient, its training KD loss ran at 3x the
unguided run's, and the run trailed it by 8 points after 6 rounds; the union is what the paper
describes).  Few-shot mode is the same code with k real images per class as the sample source.

Deviations (the paper's method section was read through a third-party summary, not the paper):
the discriminator's architecture (two spectral-normalised layers on the features, a projection head),
the adaptive feature noise,
non-saturating BCE losses, Adam(2e-4, betas 0.5/0.999) and one D step per synthesis call are our
choices; ``ratio`` (the share of a student batch drawn from the condensed set: 0.1) is ours;
the paper samples the union as one set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from datafree.data.dsa import DEFAULT_STRATEGY, dsa
from datafree.data.loaders import ImageSet, load_dataset
from datafree.errors import DatafreeError
from datafree.models.convnet import ConvNet

if TYPE_CHECKING:
    from datafree.synthesis.base import TeacherInverter


@dataclass
class GuideConfig:
    mode: str = "guided"  # guided | mix (naive: the samples only join the student's data)
    align: str = "adversarial"  # generator L_FA: adversarial (BCE on D) | feature_matching (class means of phi)
    #   | embedding (DM: class-mean embeddings under random ConvNets; no discriminator)
    labels: str = "given"  # the class D and L_FA pair a guide image with: given (its label) | teacher (its argmax)
    adv: float = 1.0  # weight of the generator's feature-alignment loss (paper: L_G = L_MI + L_FA)
    weighting: str = "fixed"  # fixed: L_FA weighs ``adv`` | adaptive: ``adv`` is L_FA's share of the gradient
    adapt_every: int = 5  # adaptive: synthesis calls between two measurements of the gradient norms
    lr_d: float = 2e-4
    d_steps: int = 1  # discriminator updates per synthesis call
    hidden: int = 256
    embed_width: int = 32  # align=embedding: width of the random ConvNet-3 (DM's is 128)
    ratio: float = 0.1  # share of each student batch drawn from the guide samples
    kd_weight: float = 0.0  # > 0: a separate KD term of this weight on the guide samples (0: one term, in-batch)
    strategy: str = DEFAULT_STRATEGY  # DSA on guide samples and, for D, on synthetic ones
    noise_target: float | None = 0.6  # ADA's r_t = E[sign(D(f_cond))] target for the adaptive feature noise
    noise_step: float = 0.02  # change of sigma per D update (0 -> 1 in 50 updates)
    noise_max: float = 4.0  # sigma's ceiling, in units of the guide features' RMS


class FeatureDiscriminator(nn.Module):
    """Projection discriminator on penultimate features: D(f, y) = w . phi(f) + e_y . phi(f)."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.phi = nn.Sequential(sn(nn.Linear(dim, hidden)), nn.LeakyReLU(0.2), sn(nn.Linear(hidden, hidden)),
                                 nn.LeakyReLU(0.2))
        self.out = sn(nn.Linear(hidden, 1))
        self.embed = sn(nn.Embedding(num_classes, hidden))

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.phi(f)
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(1)


def load_guide(ref: str | os.PathLike | ImageSet, input_shape: tuple[int, ...], num_classes: int) -> ImageSet:
    ds = ref if isinstance(ref, ImageSet) else load_dataset(str(ref))
    if tuple(ds.x.shape[1:]) != tuple(input_shape):
        raise DatafreeError(f"guide images have shape {tuple(ds.x.shape[1:])} but the models take {tuple(input_shape)}")
    if int(ds.y.max()) >= num_classes or int(ds.y.min()) < 0:
        raise DatafreeError(f"guide labels go up to {int(ds.y.max())} but the teacher has {num_classes} classes")
    return ds


class Guide:
    """The guide samples, the discriminator and the losses that use them."""

    def __init__(self, cfg: GuideConfig, data: ImageSet, inverter: TeacherInverter, source: str = "") -> None:
        if cfg.mode not in ("guided", "mix"):
            raise DatafreeError(f"guide mode must be guided or mix, got '{cfg.mode}'")
        if cfg.weighting not in ("fixed", "adaptive") or cfg.adapt_every < 1:
            raise DatafreeError(f"guide weighting must be fixed or adaptive with adapt_every >= 1, got "
                                f"{cfg.weighting}, {cfg.adapt_every}")
        if cfg.align not in ("adversarial", "feature_matching", "embedding"):
            raise DatafreeError(f"guide align must be adversarial, feature_matching or embedding, got '{cfg.align}'")
        if cfg.embed_width < 1:
            raise DatafreeError(f"guide embed_width must be >= 1, got {cfg.embed_width}")
        if cfg.labels not in ("given", "teacher"):
            raise DatafreeError(f"guide labels must be given or teacher, got '{cfg.labels}'")
        if not 0.0 < cfg.ratio <= 1.0:
            raise DatafreeError(f"guide ratio must be in (0, 1], got {cfg.ratio}")
        if cfg.kd_weight < 0:
            raise DatafreeError(f"guide kd_weight must be >= 0, got {cfg.kd_weight}")
        if cfg.noise_target is not None and not -1.0 < cfg.noise_target < 1.0:
            raise DatafreeError(f"guide noise_target must be in (-1, 1) or none, got {cfg.noise_target}")
        self.cfg, self.inv, self.source = cfg, inverter, source
        self.x, self.y = data.float(), data.y.clone()
        with torch.no_grad():  # what the teacher makes of each guide image, reported and used by labels=teacher
            self.teacher_y = torch.cat([inverter.logits(xb).argmax(1) for xb in self.x.split(256)])
        self.agree = int((self.teacher_y == self.y).sum())
        if cfg.labels == "teacher":
            self.y = self.teacher_y.clone()
        # the guide indices sorted by class: class c's images are by_class[start[c] : start[c] + count[c]]
        self.by_class = torch.argsort(self.y, stable=True)
        self.count = torch.bincount(self.y, minlength=inverter.num_classes)
        self.start = torch.cumsum(self.count, 0) - self.count
        self.has_class = self.count > 0
        self.counts = data.counts()
        self.disc: FeatureDiscriminator | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.sigma = 0.0  # the adaptive feature noise, in units of ``scale``
        self.weight = cfg.adv  # adaptive weighting: L_FA's last measured weight (``adv`` before the first)
        self.measured = 0  # adaptive weighting: synthesis calls since the last measurement (0: measure now)
        # feature matching: D's phi of the guide features, averaged per class at the last D update
        self.real_phi: torch.Tensor | None = None
        self.real_seen: torch.Tensor | None = None
        if cfg.mode == "guided" and cfg.align != "embedding":
            with torch.no_grad():
                _, f = inverter.logits_and_features(self.x[:256])
            self.scale = float(f.float().pow(2).mean().sqrt())
            self.disc = FeatureDiscriminator(f.shape[1], inverter.num_classes, cfg.hidden)
            self.opt = torch.optim.Adam(self.disc.parameters(), cfg.lr_d, betas=(0.5, 0.999))

    @property
    def guided(self) -> bool:
        return self.cfg.mode == "guided"

    @property
    def needs_features(self) -> bool:
        """Whether L_FA reads the teacher's penultimate features (every alignment but ``embedding``)."""
        return self.disc is not None

    def describe(self) -> str:
        per = ", ".join(f"{c}: {n}" for c, n in sorted(self.counts.items()))
        text = (f"{len(self.y)} images from {self.source or 'the given set'} (per class {per}; the teacher "
                f"agrees with {self.agree} of the {len(self.y)} labels")
        if self.guided and self.cfg.labels == "teacher":
            text += f", and the guidance pairs each image with the teacher's class (" \
                     f"{int(self.has_class.sum())} classes)"
        return text + ")"

    # -- inversion side --------------------------------------------------------------------------
    def _sample_like(self, y: torch.Tensor) -> torch.Tensor:
        """A random guide image of each requested class (every class in ``y`` must have one)."""
        n = self.count[y]
        return self.by_class[self.start[y] + (torch.rand(len(y)) * n).long().clamp_max(n - 1)]

    def _noisy(self, f: torch.Tensor) -> torch.Tensor:
        """What D sees of features f: f under the current adaptive instance noise."""
        f = f.float()
        return f + (self.sigma * self.scale) * torch.randn_like(f) if self.sigma > 0 else f

    def align_loss(self, f_syn: torch.Tensor | None, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's L_FA: make synthetic samples of class y look like condensed ones of class y
        (averaged over the samples whose class has guide images): their teacher features ``f_syn`` or, for
        ``align=embedding``, the images ``x`` themselves (in [0, 1])."""
        keep = self.has_class[y]
        if not bool(keep.any()):
            return torch.zeros(())
        if self.cfg.align == "embedding":
            return self._embedding_loss(x[keep], y[keep])
        if self.cfg.align == "feature_matching":
            return self._feature_matching(f_syn[keep], y[keep])
        logit = self.disc(self._noisy(f_syn[keep]), y[keep])
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))

    def align_weight(self, loss_inv: torch.Tensor, l_align: torch.Tensor, x: torch.Tensor) -> float:
        """The weight of L_FA in the synthesizer's loss at the first step of a call.  Fixed: ``adv``.  Adaptive
        (the adaptive GAN weight of Esser et al., "Taming Transformers for High-Resolution Image Synthesis",
        CVPR 2021, Eq. 7, taken on the images rather than the generator's last layer so that it serves the
        pixel synthesizer too): every ``adapt_every`` calls
            weight = adv * |d L_inv / d x| / (|d L_FA / d x| + 1e-4),   clamped to [0, 1e4],
        so that L_FA pulls the images with ``adv`` times the gradient of the inversion losses; two extra
        backward passes (retaining the graph) on that step only."""
        cfg = self.cfg
        if cfg.weighting == "fixed":
            return cfg.adv
        if not l_align.requires_grad:  # no class of the batch has guide images: nothing to measure
            return self.weight
        if self.measured == 0:
            (g_inv,) = torch.autograd.grad(loss_inv, [x], retain_graph=True)
            (g_fa,) = torch.autograd.grad(l_align, [x], retain_graph=True)
            ratio = float(g_inv.norm()) / (float(g_fa.norm()) + 1e-4)
            self.weight = min(1e4, max(0.0, cfg.adv * ratio))
        self.measured = (self.measured + 1) % cfg.adapt_every
        return self.weight

    def _feature_matching(self, f_syn: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Salimans et al. 2016 (Sec. 3.1) per class: |mean phi(f_syn | y=c) - mean phi(f_cond | y=c)|^2,
        relative to |mean phi(f_cond | y=c)|^2, averaged over the batch's classes.  Only a class's batch
        mean is pulled, so its samples may spread around the guide images instead of onto them."""
        if self.real_phi is None:
            return torch.zeros(())  # no D update yet: nothing to match
        mean_syn, seen = self._class_means(self.disc.phi(f_syn.float()), y)
        present = seen & self.real_seen
        if not bool(present.any()):
            return torch.zeros(())
        target = self.real_phi
        rel = (mean_syn - target).pow(2).sum(1) / target.pow(2).sum(1).clamp_min(1e-8)
        return rel[present].mean()

    def _embedding_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distribution Matching's objective (Zhao & Bilen, WACV 2023, Eq. 4) turned on the generator: under a
        freshly initialised ConvNet-3 psi (instance norm, width ``embed_width``; fewer blocks for images under 24
        pixels) and one DSA transformation
        shared by both sides (Siamese), each class's mean embedding of the synthetic batch is pulled to the
        guide images' mean embedding of that class, |mu_syn,c - mu_guide,c|^2 / |mu_guide,c|^2, averaged over
        the classes present.  A DM image was optimised so that its embeddings under such networks match its
        class's real mean; this loss hands that summary to the generator, whatever the teacher reads the
        image as.  Both sides are centred as (x - 0.5) / 0.25; the instance norm after the first convolution
        removes any other affine normalisation."""
        gi = torch.randperm(len(self.y))[:256]  # the guide side, at most 256 images (all of them at ipc <= 25)
        c, h = x.shape[1], x.shape[-1]
        # contiguous NCHW: this small net runs 3x slower channels_last under bf16 autocast (18 vs 53 ms, 64 images)
        depth = max([1] + [d for d in (2, 3) if h >> d >= 3])  # DM's 3 blocks, fewer where the map would go < 3x3
        net = ConvNet(c, self.inv.num_classes, self.cfg.embed_width, depth, h).requires_grad_(False)
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        with self.inv.autocast():
            e_syn = net.embed(dsa((x.float().contiguous() - 0.5) / 0.25, self.cfg.strategy, seed)).float()
            with torch.no_grad():
                e_guide = net.embed(dsa((self.x[gi] - 0.5) / 0.25, self.cfg.strategy, seed)).float()
        mu_syn, seen = self._class_means(e_syn, y)
        mu_guide, seen_guide = self._class_means(e_guide, self.y[gi])
        present = seen & seen_guide
        if not bool(present.any()):
            return torch.zeros(())
        rel = (mu_syn - mu_guide).pow(2).sum(1) / mu_guide.pow(2).sum(1).clamp_min(1e-8)
        return rel[present].mean()

    def _class_means(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class means of the rows of h (num_classes x dim; zero for absent classes) and which are present."""
        onehot = F.one_hot(y, self.inv.num_classes).to(h.dtype)
        n = onehot.sum(0)
        return (onehot.t() @ h) / n.clamp_min(1)[:, None], n > 0

    def update_discriminator(self, x_syn: torch.Tensor, y: torch.Tensor) -> dict:
        """``d_steps`` updates of D on DSA views of the synthetic images ``x_syn`` (in [0, 1], aimed at
        classes ``y``) against DSA views of guide images of the same classes."""
        keep = self.has_class[y]
        x_syn, y = x_syn[keep], y[keep]
        if self.disc is None or not len(y):  # align=embedding trains no D
            return {}
        idx = self._sample_like(y)
        with torch.no_grad():
            _, f_real = self.inv.logits_and_features(dsa(self.x[idx], self.cfg.strategy).clamp(0, 1))
            _, f_syn = self.inv.logits_and_features(dsa(x_syn.detach().float(), self.cfg.strategy).clamp(0, 1))
        signs = []
        for _ in range(self.cfg.d_steps):
            lr, ls = self.disc(self._noisy(f_real), self.y[idx]), self.disc(self._noisy(f_syn), y)
            loss = F.binary_cross_entropy_with_logits(lr, torch.ones_like(lr)) + \
                F.binary_cross_entropy_with_logits(ls, torch.zeros_like(ls))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            signs.append(lr.detach().sign())
        if self.cfg.align == "feature_matching":  # the class means the generator's L_FA matches next
            with torch.no_grad():
                self.real_phi, self.real_seen = self._class_means(self.disc.phi(f_real.float()), self.y[idx])
        acc = 0.5 * (float((lr > 0).float().mean()) + float((ls < 0).float().mean()))
        r_t = float(torch.cat(signs).mean())  # ADA's overfitting heuristic on this update's real side
        if self.cfg.noise_target is not None:
            step = self.cfg.noise_step * (1.0 if r_t > self.cfg.noise_target else -1.0)
            self.sigma = min(self.cfg.noise_max, max(0.0, self.sigma + step))
        return {"guide_d_loss": loss.item(), "guide_d_acc": acc, "guide_r_t": r_t, "guide_noise": self.sigma}

    # -- student side ------------------------------------------------------------------------------
    def student_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n guide samples under per-sample DSA (pixels in [0, 1]) and the teacher's logits for them."""
        idx = torch.randint(len(self.y), (n,))
        x = dsa(self.x[idx], self.cfg.strategy).clamp(0, 1)
        with torch.no_grad():
            t = self.inv.logits(x)
        return x, t

    def state_dict(self) -> dict:
        if not self.guided:
            return {}
        state = {"weight": self.weight, "measured": self.measured}  # adaptive weighting, with or without D
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), opt=self.opt.state_dict(), sigma=self.sigma,
                         real_phi=self.real_phi, real_seen=self.real_seen)
        return state

    def load_state_dict(self, state: dict) -> None:
        if not (self.guided and state):
            return
        self.weight, self.measured = float(state.get("weight", self.cfg.adv)), int(state.get("measured", 0))
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.opt.load_state_dict(state["opt"])
            self.sigma = float(state.get("sigma", 0.0))  # checkpoints from before the adaptive noise: none
            self.real_phi, self.real_seen = state.get("real_phi"), state.get("real_seen")
