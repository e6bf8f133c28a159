"""PRE-DFKD generative pseudo replay (Binici et al., "Robust and Resource-Efficient Data-Free Knowledge
Distillation by Generative Pseudo Replay", AAAI 2022).

No synthetic sample is stored: a VAE learns the stream of synthetic samples and regenerates the past.
Per new synthetic batch x_n (``observe``):
1. *VAE update* (``steps`` Adam steps, its own optimizer and schedule; the teacher-logit term, which
   costs a teacher pass, in the first ``logit_steps`` of them) on x_n together with pseudo
   replays x_m of the VAE itself (``self_replay`` of them per novel sample), so the VAE does not forget
   older parts of the stream (generative replay of the memory model itself):
       L_VAE = |x - x^|_1  +  logit * |T(x) - T(x^)|_1  +  kl * KL(q(z|x) || N(0, I))
   The second term is the paper's synthetic-data-aware reconstruction: synthetic images carry their
   class in patterns a pixel loss ignores, so the reconstruction must keep the teacher's response.
2. *Pseudo-replay sampling*: latents z from the prior, each with a target class (balanced by
   construction), are nudged by ``nudge_steps`` Adam steps on  CE(T(D(z)), y) + nudge_bn * L_BN(D(z)),
   then decoded.  The prior is the paper's N(0, I) (z's batch moments are also kept at N(0, I) while
   nudging); ``prior=fitted`` starts from a Gaussian fitted online to the encoder's means over the stream
   (``datafree.replay.latent.LatentPrior``: rank-``prior_rank`` covariance, exponentially weighted) - an
   option, not the default: see the measurement at the end.
The student batch takes a share ``ratio`` of pseudo-replay samples, the rest from the novel window.

Deviations from the paper (each for a CPU budget): the paper nudges and decodes fresh latents for every
student step; nudging (a teacher forward and backward pass per step) is the replay's largest cost, so here
the nudged latents persist: a FIFO *latent pool* of ``pool`` codes, 8-bit (per-code absmax scale), into
which ``fresh`` newly nudged codes enter per synthesized batch, the oldest leaving.  The student's replay
share is decoded from pool codes by the *current* VAE at every student step (a decoder pass, 2-4 % of a
resnet20 step), so no image is stored; the teacher's logits per code (image and mirror) are cached when
it enters and refreshed for the ``relabel`` longest-unrefreshed codes per synthesized batch, as the VAE
drifts (``replay_relabel_flips`` logs the share whose teacher argmax changed: 10-18 %, mean 13 %, per
round of the 60-minute CIFAR-10 benchmark with 320 codes, each code at most five synthesized batches stale).
The VAE's own replays come from the pool.  Footprint: weights, Adam state, the pool (codes, scales, logits,
stamps) and a fitted prior if used; the default 320 codes take the bytes of the 64 decoded images (uint8, with
their logits) that an earlier design served from a FIFO block: five times as many distinct replays at a
time, each decoded by the VAE as it is now, as the paper's are, for about the same upkeep (nudging cost
unchanged; relabelling and the per-step decode add 0.2 s per synthesized batch and 0.02 s per student batch
with the resnet56 teacher).  The VAE is a small conv-VAE with a spatial latent (2 x 16 x 16 for 32 px)
sized for the input (``datafree.models.vae``) rather than the paper's generator-shaped decoder with a
1000-d vector latent; the teacher-logit term weighs 0.1, not 1. Both measured on 2,560 resnet56 inversions
(400 VAE steps, 256 held-back samples): with weight 1 the logit term swamps the pixel term (pixel L1 0.19,
teacher argmax kept on 17 % of reconstructions); with 0.1 and a 4 x 8 x 8 latent 0.08 / 25 %, with 0.1 and
2 x 16 x 16 0.05 / 64 %.

The nudge adds the teacher's BatchNorm-statistics loss to the paper's class term, because a small VAE's
prior samples alone are not replay: probe (1,741 synthetic resnet56 samples as the stream, a VAE
trained 600 steps on them, 2,000 pseudo replays labelled by the teacher, a fresh resnet20 given 150 KD
steps on them, scored by agreement with the teacher on 1,280 *other* synthetic samples - no real image):
the stored samples themselves 27.4 %, the VAE's reconstructions of them 27.8 %, uniform noise 10.3 %;
prior samples 9.8 % (decoded to texture, 72 % of them one class), per-class diagonal Gaussians over the
stream's latents 9.3 %, vector-like latents (8 x 4 x 4, 4 x 8 x 8, KL 3e-4 .. 2e-3) 12-15 %; nudged 5
steps to balanced classes 13.0 %, with the BN term 17.5 %, 20 steps with it 22.1 %.  Five steps are the
default: each is a teacher forward and backward pass over the fresh codes.

Two options, each measured and not the default (the 60-minute runs are in the README's slower-machine
section). ``prior=fitted`` starts the nudging from a Gaussian fitted online to the encoder's means
(``LatentPrior``): they have N(0, 1)-like marginals (mean |mu| 0.23, per-dimension std 1.07) but correlated
dimensions. ``codes=encoded`` departs from the paper's "store no sample": the pool holds the encoder's codes
of the stream's own samples (``code_bits`` 8, or 4 with two to a byte), kept by reservoir over the stream as
the bank keeps its samples (``reservoir_slots``), relabelled and decoded anew by the current VAE, with no
nudging - replay compressed by the VAE. Probe (the VAE at the end of the 60-minute slower-machine run; the
bank run's stored samples as the stream; 640 replays each, a fresh resnet20 given 120 KD steps, agreement with
the teacher on another run's 640 samples; no real image): stored samples 27.7 % (33.8 % on another random 640
of them, with which the decoded codes were scored: the probe's spread is wide); N(0, I) + 5 nudge steps 12.7 %
(lr 0.2: 14.4 %, 10 steps 12.7-14.2 %, BN weight 10: 12.3 %); fitted prior + 5 steps, rank 16 / 32 / 64: 19.2
/ 22.7 / 25.0 %; decoded codes, fp32 / 8-bit / 4-bit: 26.1 / 28.1 / 23.1 %. Neither carried over to the run:
the fitted prior (rank 64, decay 0.9) ended at 41.47 % with a 32.57 % mean, the encoded pool (558 4-bit codes,
ratio 0.5) at 43.05 % / 34.49 %, level round for round with the N(0, I) pool (44.82 % / 36.48 %) and behind
the bank of ten times its bytes.

``freeze`` (encoded codes only; ``vae@frozen`` in the benchmarks) asks why the encoded pool did not carry over
from that probe: there each code was decoded by the VAE that made it, in a run by the VAE as it is when the code
is replayed, which has learned on since.  Probe (the bf16 machine's 60-minute vae run: its 471 synthesized
batches in order, fed to a fresh VAE at the defaults, 4 steps per batch; the teacher's argmax on a 4-bit
decoding against its argmax on the sample, and pixel L1): codes made after 94 batches, decoded by that VAE 0.71
/ 0.048, by the VAE after 141 / 235 / 470 batches 0.74 / 0.050, 0.74 / 0.063, 0.72 / 0.074 - the class survives
the drift, the pixels blur by half again.  A VAE stopped after 47 / 94 / 141 batches reconstructs the last 70
batches about as well as the middle ones (0.60 / 0.78 / 0.81, pixel L1 0.063 / 0.050 / 0.047; trained to the
end 0.89 / 0.037): the stream does not drift away from a VAE that has stopped learning.  So with ``freeze`` = f
the VAE learns for the first f of the budget and holds no pool; then it stops, its Adam moments are freed and
their bytes go to a pool that fills by reservoir over the rest of the stream.  Each code decodes to the same
image for the rest of the run, so its cached logits stay exact and are never relabelled, and the upkeep is an
encoder, decoder and teacher pass per kept sample.  Footprint: weights + max(Adam moments, pool), the peak.
Measured (bf16 machine, 60 min, ``--ema 0.99``; freeze 0.2, 8 steps per batch, 837 4-bit codes, ratio 0.5,
336,756 B): 47.42 % last / 42.32 % mean, largest fall 0.57 pt, 97 s of upkeep in the hour (the nudged default:
43.67 / 39.35 %, 0.91 pt, 778 s; none 44.42 / 39.52 %, 1.16 pt; the bank of ten times the bytes 51.22 /
46.64 %; of five times them 43.39 %, of its own bytes 38.08 %).  It met the three replay bars there, not the
VAE-bytes bar (the matching bank holds 1-5x its bytes); a second seed (36.02 / 32.40 % mean
against none, largest fall 0.93 pt against none's 1.60) met the mean and last bars, not the drawdown.  Without the
EMA, in the main 10.8 img/s float32 group: 40.84 % last / 35.24 % mean against none's 42.29 / 35.66, largest fall
2.14 pt against 4.57 - the drawdown bar only; with the EMA there (against none with it, 40.16 / 34.84 %,
1.40 pt): 44.54 / 39.36 %, 0.49 pt - the three replay bars at seed 0, the 10x bank's 43.70 % mean not reached
(the nudged default there, no EMA: 39.00 / 32.20 %, 0.74 pt, 620 s of upkeep).  It stays an option: it stores
encoded samples, further from the paper than the default, and two seeds do not move a default.
``code_bits=2`` (Lloyd-Max levels) with ``logit_dtype=float16`` fits 1,635 codes in the same bytes: 44.64 % last /
39.73 % mean there, level with none - more, coarser replays lose to fewer, finer ones.

``mix`` > 0 makes the pool generative again: each replay decodes z = lam z_i + (1 - lam) z_j, a blend of two random
pool codes with lam ~ Beta(mix, mix), a new image at every call, and the engine's teacher reads it live, on the view
the student sees, so nothing is cached and a code costs its latent and scale alone (260 B at 4 bits for 2 x 16 x 16,
against 344 B with the image's and mirror's logits: 1,107 codes in the frozen pool's bytes, not 837).  The reason is
Beyer et al. ("Knowledge distillation: a good teacher is patient and consistent", CVPR 2022): a student that matches
the teacher on fixed images with precomputed logits overfits them, one that matches it on interpolations between
them, with the teacher read on the same view, keeps learning; a few hundred replayed images are that small-data
regime.  The cost is a teacher forward pass over the replay share of every student batch.  The VAE blends codes, so
a blend decodes to an image on the VAE's manifold; the bank's ``mix`` blends pixels, its counterpart for a
comparison with the blending held fixed.  Measured (MNIST-5k, 10 min, one machine, one seed; ``mix=1``, 1,225 codes
against the frozen pool's 863 in 291.5 kB): 95.20 % last / 93.16 % mean against 87.00 / 86.86 % without blending on
one machine, but 89.70 / 83.00 against 94.70 / 90.66 on another: not reliably better there.  CIFAR-10, 30 min, seed
1, one machine (not the 60-minute bar): 35.79 / 30.60 % against 31.14 / 27.30, ahead at all 7 evaluations.
CIFAR-10, 60 min, seed 0 (bf16cpu group): 67.40 / 55.73 % against 47.42 / 42.32 without blending and 51.22 / 46.64
for the bank of 10x its bytes, at the same 56 rounds as that bank; seed 1: 59.97 / 48.59 % against 51.19 / 47.16 for
that bank, which ran 74 rounds to its 52 on a faster draw.  An option, not the default: the codes are encoded
samples, not the paper's pseudo replay, and how much of the gain is the blending alone (``memory-bank`` with
``mix``) is not measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from datafree.errors import DatafreeError
from datafree.io.budget import cosine
from datafree.models.vae import ConvVAE, kl_divergence
from datafree.replay.base import ReplayContext, beta_blend
from datafree.replay.latent import LatentPrior, dequantize_codes, quantize_codes
from datafree.replay.memory_bank import reservoir_slots
from datafree.synthesis.base import finite
from datafree.synthesis.pool import SamplePool, last_writes, sample_indices


@dataclass
class VAEReplayConfig:
    latent_channels: int = 2  # the latent is latent_channels x side x side (side <= latent_side)
    latent_side: int = 16
    width: int = 16  # channels of the first conv (doubling per downsampling, at most 4x)
    lr: float = 5e-4  # Adam (the paper: generator lr / 40)
    schedule: str = "constant"  # constant | cosine (over the budget, down to 10 %)
    steps: int = 4  # VAE updates per synthesized batch (the first with the teacher-logit term)
    logit: float = 0.1  # weight of |T(x) - T(x^)|_1 (the paper: 1)
    logit_steps: int = 1  # of the ``steps``, how many include the teacher-logit term (it costs a teacher pass)
    kl: float = 1e-5
    self_replay: float = 0.25  # own pseudo replays per novel sample in each VAE batch (paper: 128 per 512)
    ratio: float = 0.25  # share of each student batch drawn from pseudo replay (the paper: 1 in 9)
    codes: str = "nudged"  # nudged: the paper's prior latents nudged to the teacher (FIFO) | encoded: see below
    pool: int = 320  # latent codes kept, decoded anew for every student batch
    code_bits: int = 8  # 8 | 4 (two codes to a byte) | 2 (Lloyd-Max levels, four to a byte)
    logit_dtype: str = "float32"  # the pool's cached teacher logits: float32 | float16 (half the bytes)
    fresh: int = 32  # nudged codes: added per synthesized batch (the oldest leave); encoded: every sample is offered
    relabel: int = 32  # codes whose cached teacher logits are refreshed per synthesized batch (the stalest)
    nudge_steps: int = 5  # Adam steps on the latents towards balanced target classes (0: plain prior samples)
    nudge_lr: float = 0.05
    nudge_bn: float = 3.0  # weight of the teacher's BN-statistics loss when nudging (the synthesizer's weight)
    prior: str = "normal"  # normal: N(0, I) | fitted: nudging starts from a Gaussian fitted to the stream's latents
    prior_rank: int = 64  # directions of the fitted prior's covariance (fp16, rank x latent)
    prior_decay: float = 0.9  # per synthesized batch: the fitted prior follows the stream and the drifting encoder
    min_updates: int = 100  # no pseudo replay (and no nudging) before the VAE has taken this many steps
    freeze: float = 0.0  # encoded codes: budget share when the VAE stops learning and the pool starts (0: never)
    mix: float = 0.0  # > 0: each replay decodes a Beta(mix, mix) blend of two pool codes, read by a live teacher pass


class VAEReplay:
    def __init__(self, cfg: VAEReplayConfig, ctx: ReplayContext) -> None:
        if cfg.schedule not in ("constant", "cosine"):
            raise DatafreeError(f"vae schedule must be constant or cosine, got '{cfg.schedule}'")
        if not 0.0 <= cfg.ratio < 1.0:
            raise DatafreeError(f"vae ratio must be in [0, 1), got {cfg.ratio}")
        if cfg.prior not in ("fitted", "normal") or cfg.prior_rank < 1 or not 0.0 <= cfg.prior_decay < 1.0:
            raise DatafreeError(f"vae prior must be fitted or normal, with prior_rank >= 1 and prior_decay in [0, 1); "
                                f"got {cfg.prior}, {cfg.prior_rank}, {cfg.prior_decay}")
        if cfg.codes not in ("nudged", "encoded") or cfg.code_bits not in (2, 4, 8):
            raise DatafreeError(f"vae codes must be nudged or encoded and code_bits 2, 4 or 8, got {cfg.codes}, "
                                f"{cfg.code_bits}")
        if cfg.logit_dtype not in ("float32", "float16"):
            raise DatafreeError(f"vae logit_dtype must be float32 or float16, got '{cfg.logit_dtype}'")
        if not 0.0 <= cfg.freeze < 1.0 or (cfg.freeze and cfg.codes != "encoded"):
            raise DatafreeError(f"vae freeze must be in [0, 1) and needs codes=encoded, got {cfg.freeze} with "
                                f"codes={cfg.codes}")
        if cfg.mix < 0:
            raise DatafreeError(f"vae mix must be >= 0 (0: replay the pool's codes as they are), got {cfg.mix}")
        if cfg.pool < 1 or cfg.fresh < 1 or cfg.relabel < 0 or (cfg.codes == "nudged" and cfg.fresh > cfg.pool):
            raise DatafreeError(f"vae needs 1 <= fresh <= pool and relabel >= 0, got pool={cfg.pool}, "
                                f"fresh={cfg.fresh}, relabel={cfg.relabel}")
        c, h, w = ctx.input_shape
        if h != w or h % 2:
            raise DatafreeError(f"the VAE needs square images of even side, got {tuple(ctx.input_shape)}; "
                                "use --replay memory-bank")
        self.cfg, self.ctx, self.ratio = cfg, ctx, cfg.ratio
        self.logit_dtype = getattr(torch, cfg.logit_dtype)  # of the pool's cached logits
        # blended replays are new images each time: no logits to cache, the engine's teacher reads them live
        self.caching = ctx.cache_logits and not cfg.mix
        self.vae = ConvVAE(ctx.input_shape, cfg.latent_channels, cfg.width, cfg.latent_side)
        if self.vae.latent % (8 // cfg.code_bits):
            raise DatafreeError(f"{cfg.code_bits}-bit codes need a latent size divisible by {8 // cfg.code_bits}, "
                                f"got {self.vae.latent}; use code_bits=8")
        self.opt = torch.optim.Adam(self.vae.parameters(), cfg.lr, betas=(0.9, 0.999))
        self.prior = LatentPrior(self.vae.latent, cfg.prior_rank, cfg.prior_decay) if cfg.prior == "fitted" else None
        # the latent pool (nudged: newest first; encoded: reservoir slots): codes (int8, or uint8 pairs at 4 bits),
        # their scales, cached teacher logits (N x views x C, or None without the engine's cache) and the observe
        # count at which those logits were computed
        self.codes: torch.Tensor | None = None
        self.scales: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.stamps: torch.Tensor | None = None
        self.updates = self.calls = self.offered = 0  # offered: stream samples offered to an encoded pool
        self.frozen = False  # freeze: the VAE has stopped learning, its Adam state is gone, the pool fills

    @property
    def ready(self) -> bool:
        return self.codes is not None and self.updates >= self.cfg.min_updates

    def _teacher(self, x01: torch.Tensor) -> torch.Tensor:
        return self.ctx.inverter.logits(x01)

    @contextlib.contextmanager
    def _eval_mode(self, frozen: bool = False) -> Iterator[ConvVAE]:
        """The VAE in eval mode (with ``frozen`` weights: no gradient to them), restored afterwards."""
        was = self.vae.training
        self.vae.eval()
        if frozen:
            self.vae.requires_grad_(False)
        try:
            yield self.vae
        finally:
            if frozen:
                self.vae.requires_grad_(True)
            self.vae.train(was)

    # -- pseudo replay ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether latents come from the fitted prior (it is on and has seen a batch), not N(0, I)."""
        return self.prior is not None and self.prior.mean is not None

    def prior_sample(self, n: int) -> torch.Tensor:
        """n latents from the prior: the fitted Gaussian once it has seen a batch, else N(0, I)."""
        return self.prior.sample(n) if self.fitted else torch.randn(n, self.vae.latent)

    def nudge(self, n: int) -> torch.Tensor:
        """n prior latents, each given a target class (balanced by construction), nudged towards the
        teacher's response for it and its BatchNorm statistics."""
        cfg, inv = self.cfg, self.ctx.inverter
        with self._eval_mode(frozen=True) as vae:
            z = self.prior_sample(n).requires_grad_(True)
            y = inv.balanced_targets(n)
            opt = torch.optim.Adam([z], cfg.nudge_lr)
            for _ in range(cfg.nudge_steps):
                if cfg.nudge_bn:
                    with inv.inverting(momentum=0.0):
                        t = self._teacher(vae.decode(z))
                        l_bn = inv.bn_loss()
                else:
                    t, l_bn = self._teacher(vae.decode(z)), torch.zeros(())
                loss = F.cross_entropy(t, y) + cfg.nudge_bn * l_bn
                if not self.fitted:  # keep N(0, I) samples' batch moments; a fitted prior has its own
                    loss = loss + z.mean(0).pow(2).mean() + (z.var(0) - 1).pow(2).mean()
                finite(loss)
                (g,) = torch.autograd.grad(loss, [z])
                z.grad = g
                opt.step()
        return z.detach()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """Pool codes -> images on the pool's 8-bit grid, by the current VAE (in eval mode)."""
        return self._decode(dequantize_codes(codes, scales, self.cfg.code_bits))

    @torch.no_grad()
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        with self._eval_mode() as vae:
            return SamplePool.quantize(vae.decode(z))

    def generate(self, n: int) -> tuple[torch.Tensor, dict]:
        """n fresh pseudo replays in [0, 1] (nudged, quantized to ``code_bits``, decoded)."""
        return self.decode(*quantize_codes(self.nudge(n), self.cfg.code_bits)), {}

    @torch.no_grad()
    def encode(self, images01: torch.Tensor) -> torch.Tensor:
        """The encoder's means (in eval mode), flattened."""
        with self._eval_mode() as vae:
            return vae.encode(images01)[0].flatten(1)

    def _refresh_pool(self, novel: torch.Tensor) -> dict:
        """Store new codes - ``fresh`` nudged ones in front, the oldest leaving; or the novel batch's
        encodings, by reservoir - then refresh the cached logits of the ``relabel`` stalest codes for the VAE
        as it is now."""
        cfg, out = self.cfg, {}
        if cfg.codes == "nudged":
            codes, scales = quantize_codes(self.nudge(cfg.fresh), cfg.code_bits)
            slots = None
        else:
            keep, slots = reservoir_slots(self.offered, cfg.pool, len(novel))
            self.offered += len(novel)
            if not len(keep) and self.codes is not None:  # the reservoir kept none of this batch
                return self._relabel(out)
            codes, scales = quantize_codes(self.encode(novel[keep]), cfg.code_bits)
        logits = (self.ctx.inverter.view_logits(self.decode(codes, scales)).to(self.logit_dtype)
                  if self.caching else None)
        stamps = torch.full((len(codes),), self.calls, dtype=torch.int32) if logits is not None else None

        def push(new: torch.Tensor | None, old: torch.Tensor | None) -> torch.Tensor | None:
            if old is None or new is None:
                return new
            if slots is None:  # FIFO, newest first
                return torch.cat([new, old])[:cfg.pool]
            grow = min(len(new), cfg.pool - len(old))  # the pool fills first: those come first, in order
            old = torch.cat([old, new[:grow]])
            at, last = last_writes(slots[grow:])
            old[at] = new[grow:][last]
            return old

        self.codes, self.scales = push(codes, self.codes), push(scales, self.scales)
        self.logits, self.stamps = push(logits, self.logits), push(stamps, self.stamps)
        return self._relabel(out)

    def _relabel(self, out: dict) -> dict:
        cfg = self.cfg
        if self.logits is None:  # nothing cached, nothing goes stale
            return out
        stale = self.stamps < self.calls
        if cfg.relabel and not self.frozen and bool(stale.any()):
            idx = self.stamps.argsort(stable=True)[:min(cfg.relabel, int(stale.sum()))]
            new = self.ctx.inverter.view_logits(self.decode(self.codes[idx], self.scales[idx]))
            out["replay_relabel_flips"] = float((new[:, 0].argmax(1) != self.logits[idx, 0].argmax(1)).float().mean())
            self.logits[idx], self.stamps[idx] = new.to(self.logit_dtype), self.calls
        return out

    # -- VAE update ------------------------------------------------------------------------------
    def _lr(self, progress: float) -> float:
        if self.cfg.schedule == "constant":
            return self.cfg.lr
        return self.cfg.lr * cosine(progress, floor=0.1)

    def observe(self, images01: torch.Tensor, logits: torch.Tensor | None, progress: float) -> dict:
        cfg = self.cfg
        self.calls += 1
        if cfg.freeze and not self.frozen and progress >= cfg.freeze and self.updates >= cfg.min_updates:
            self.frozen = True
            self.opt.state.clear()  # its bytes go to the pool, which starts now
        if self.frozen:  # a fixed decoder: codes decode as they were encoded, their logits never go stale
            return self._refresh_pool(images01)
        x, t = images01, (logits[:, 0] if logits is not None else None)
        k = round(cfg.self_replay * len(x))
        if k and self.codes is not None:  # rehearse the VAE on its own replays
            pick = torch.randperm(len(self.codes))[:k]
            x = torch.cat([x, self.decode(self.codes[pick], self.scales[pick])])
            t = torch.cat([t, self.logits[pick, 0].float()]) if t is not None and self.logits is not None else None
        if t is None:
            with torch.no_grad():
                t = self._teacher(x)
        for g in self.opt.param_groups:
            g["lr"] = self._lr(progress)
        self.vae.train()
        l_logit = torch.zeros(())  # logged: the last step that measured it
        for i in range(cfg.steps):
            rec, mu, logvar = self.vae(x)
            l_pix = (rec - x).abs().mean()
            l_kl = kl_divergence(mu, logvar)
            loss = l_pix + cfg.kl * l_kl
            if cfg.logit and i < cfg.logit_steps:
                l_logit = (self._teacher(rec) - t).abs().mean()
                loss = loss + cfg.logit * l_logit
            finite(loss)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.updates += 1
        if self.prior is not None:  # the encoder's means of this batch (before its last step): no extra pass
            self.prior.update(mu)
        metrics = {"vae_loss": loss.item(), "vae_pixel_l1": l_pix.item(), "vae_logit_l1": l_logit.item(),
                   "vae_kl": l_kl.item()}
        if self.updates >= cfg.min_updates and not cfg.freeze:  # an untrained VAE's codes would be wasted
            metrics.update(self._refresh_pool(images01))
        return metrics

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = sample_indices(len(self.codes), n)
        if self.cfg.mix:  # z = lam * z_i + (1 - lam) * z_j, lam ~ Beta(mix, mix): a new image; logits None (live)
            bits = self.cfg.code_bits
            other = torch.randint(len(self.codes), (n,))
            z = beta_blend(dequantize_codes(self.codes[idx], self.scales[idx], bits),
                           dequantize_codes(self.codes[other], self.scales[other], bits), self.cfg.mix)
            return self._decode(z), None
        logits = self.logits[idx].float() if self.logits is not None else None
        return self.decode(self.codes[idx], self.scales[idx]), logits

    # -- footprint and persistence ---------------------------------------------------------------
    def footprint(self) -> dict:
        weights = sum(t.numel() * t.element_size() for t in self.vae.state_dict().values())
        opt = sum(v.numel() * v.element_size() for s in self.opt.state.values() for v in s.values()
                  if torch.is_tensor(v))
        # the pool at capacity (as a bank reports its capacity): code, scale, and cached logits with their stamp
        logits = self.ctx.views * self.ctx.num_classes * self.logit_dtype.itemsize + 4 if self.caching else 0
        per_code = self.vae.latent * self.cfg.code_bits // 8 + 4 + logits
        pool = self.cfg.pool * per_code
        prior = self.prior.nbytes if self.prior is not None else 0
        held, extra = opt + pool, {}
        if self.cfg.freeze:  # Adam's moments (held until the freeze, as measured before it) or the pool: the peak
            opt = opt or sum(8 * p.numel() + 4 for p in self.vae.parameters())  # two fp32 moments and a step each
            held, extra = max(opt, pool), {"frozen": self.frozen}
        return {"bytes": weights + held + prior, "weights_bytes": weights, "optimizer_bytes": opt,
                "pool_bytes": pool, "prior_bytes": prior, "pool_codes": 0 if self.codes is None else len(self.codes),
                "params": sum(p.numel() for p in self.vae.parameters()), **extra}

    def save(self, directory: Path) -> dict:
        return {"vae": self.vae.state_dict(), "opt": self.opt.state_dict(), "codes": self.codes,
                "scales": self.scales, "logits": self.logits, "stamps": self.stamps, "updates": self.updates,
                "calls": self.calls, "offered": self.offered, "frozen": self.frozen,
                "prior": self.prior.state() if self.prior is not None else None}

    def load(self, directory: Path, state: dict) -> None:
        if "codes" not in state:
            raise DatafreeError("this checkpoint holds an older VAE replay state (a decoded block, not a latent "
                                "pool); start the run afresh in a new --out directory")
        self.vae.load_state_dict(state["vae"])
        self.opt.load_state_dict(state["opt"])
        self.codes, self.scales, self.logits, self.stamps = (state[k] for k in ("codes", "scales", "logits", "stamps"))
        self.updates, self.calls, self.offered = state["updates"], state["calls"], state.get("offered", 0)
        self.frozen = state.get("frozen", False)
        if self.prior is not None and state.get("prior") is not None:
            self.prior.load(state["prior"])

    def prune(self, directory: Path, state: dict) -> None:
        pass
