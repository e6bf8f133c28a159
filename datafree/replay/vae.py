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
2. *Pseudo-replay sampling*: latents z ~ N(0, I), each with a target class (balanced by construction),
   are nudged by ``nudge_steps`` Adam steps on  CE(T(D(z)), y) + nudge_bn * L_BN(D(z))  (plus keeping
   z's batch moments at N(0, I)), then decoded.
The student batch takes a share ``ratio`` of pseudo-replay samples, the rest from the novel window.

Deviations from the paper (each for a CPU budget): the pseudo replays are served from a block of ``block``
samples, a FIFO into which a ``refresh`` share (half) is decoded anew per synthesized batch, with the
teacher's logits for them and their mirror cached, and the student draws its replay share from the current
block (the paper decodes fresh ones for every student step; nudging, a teacher forward and backward pass
per step, is the replay's largest cost: per synthesized batch with the resnet56 teacher on this 2-core
CPU, 3.23 of 4.20 s with the whole block decoded anew, 2.05 of 3.09 s with half of it); the VAE's own
replays come from the block; the VAE is a small conv-VAE with a spatial latent (2 x 16 x 16 for 32 px)
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
default: each is a teacher forward and backward pass over the block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from datafree.errors import DatafreeError
from datafree.models.vae import ConvVAE, kl_divergence
from datafree.replay.base import ReplayContext
from datafree.synthesis.base import finite
from datafree.synthesis.pool import SamplePool


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
    block: int = 64  # pseudo replays served to the student (a FIFO of decoded, nudged samples)
    refresh: float = 0.5  # share of the block decoded anew per synthesized batch (the oldest ones go)
    nudge_steps: int = 5  # Adam steps on the latents towards balanced target classes (0: plain prior samples)
    nudge_lr: float = 0.05
    nudge_bn: float = 3.0  # weight of the teacher's BN-statistics loss when nudging (the synthesizer's weight)
    min_updates: int = 100  # no replay before the VAE has taken this many steps


class VAEReplay:
    def __init__(self, cfg: VAEReplayConfig, ctx: ReplayContext) -> None:
        if cfg.schedule not in ("constant", "cosine"):
            raise DatafreeError(f"vae schedule must be constant or cosine, got '{cfg.schedule}'")
        if not 0.0 <= cfg.ratio < 1.0:
            raise DatafreeError(f"vae ratio must be in [0, 1), got {cfg.ratio}")
        if cfg.block < 1 or not 0.0 < cfg.refresh <= 1.0:
            raise DatafreeError(f"vae needs block >= 1 and refresh in (0, 1], got block={cfg.block}, "
                                f"refresh={cfg.refresh}")
        c, h, w = ctx.input_shape
        if h != w or h % 2:
            raise DatafreeError(f"the VAE needs square images of even side, got {tuple(ctx.input_shape)}; "
                                "use --replay memory-bank")
        self.cfg, self.ctx, self.ratio = cfg, ctx, cfg.ratio
        self.vae = ConvVAE(ctx.input_shape, cfg.latent_channels, cfg.width, cfg.latent_side)
        self.opt = torch.optim.Adam(self.vae.parameters(), cfg.lr, betas=(0.9, 0.999))
        self.block: torch.Tensor | None = None  # uint8 pseudo replays currently served
        self.block_logits: torch.Tensor | None = None
        self.updates = 0

    @property
    def ready(self) -> bool:
        return self.block is not None and self.updates >= self.cfg.min_updates

    def _teacher(self, x01: torch.Tensor) -> torch.Tensor:
        return self.ctx.inverter.logits(x01)

    # -- pseudo replay ---------------------------------------------------------------------------
    def generate(self, n: int) -> tuple[torch.Tensor, dict]:
        """n pseudo replays in [0, 1]: latents z ~ N(0, I), each given a target class (balanced by
        construction), nudged towards the teacher's response for it and its BatchNorm statistics, decoded."""
        cfg, vae = self.cfg, self.vae
        was = vae.training
        vae.eval()
        for p in vae.parameters():
            p.requires_grad_(False)
        try:
            z = torch.randn(n, vae.latent, requires_grad=True)
            y = self.ctx.inverter.balanced_targets(n)
            opt = torch.optim.Adam([z], cfg.nudge_lr)
            inv = self.ctx.inverter
            for _ in range(cfg.nudge_steps):
                if cfg.nudge_bn:
                    with inv.inverting(momentum=0.0):
                        t = self._teacher(vae.decode(z))
                        l_bn = inv.bn_loss()
                else:
                    t, l_bn = self._teacher(vae.decode(z)), torch.zeros(())
                loss = (F.cross_entropy(t, y) + cfg.nudge_bn * l_bn
                        + z.mean(0).pow(2).mean() + (z.var(0) - 1).pow(2).mean())
                finite(loss)
                (g,) = torch.autograd.grad(loss, [z])
                z.grad = g
                opt.step()
            with torch.no_grad():
                x = vae.decode(z)
        finally:
            for p in vae.parameters():
                p.requires_grad_(True)
            vae.train(was)
        return x.detach(), {}

    def _refresh_block(self) -> None:
        """Decode a ``refresh`` share of the block anew and push it in front, dropping the oldest."""
        cfg = self.cfg
        n = cfg.block if self.block is None else max(1, round(cfg.refresh * cfg.block))
        x, _ = self.generate(n)
        x = SamplePool.quantize(x)  # serve exactly what a stored sample would be

        def push(new: torch.Tensor, old: torch.Tensor | None) -> torch.Tensor:
            return new if old is None else torch.cat([new, old])[:cfg.block]

        self.block = push(SamplePool.to_uint8(x), self.block)
        if self.ctx.cache_logits:
            with torch.no_grad():
                both = self._teacher(torch.cat([x, x.flip(3)]))
            self.block_logits = push(torch.stack(both.chunk(2), 1), self.block_logits)

    # -- VAE update ------------------------------------------------------------------------------
    def _lr(self, progress: float) -> float:
        if self.cfg.schedule == "constant":
            return self.cfg.lr
        return self.cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def observe(self, images01: torch.Tensor, logits: torch.Tensor | None, progress: float) -> dict:
        cfg = self.cfg
        x, t = images01, (logits[:, 0] if logits is not None else None)
        k = round(cfg.self_replay * len(x))
        if k and self.block is not None:  # rehearse the VAE on its own replays
            pick = torch.randperm(len(self.block))[:k]
            x = torch.cat([x, self.block[pick].float().div(255)])
            if t is not None and self.block_logits is not None:
                t = torch.cat([t, self.block_logits[pick, 0]])
            else:
                t = None
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
        self._refresh_block()
        return {"vae_loss": loss.item(), "vae_pixel_l1": l_pix.item(), "vae_logit_l1": l_logit.item(),
                "vae_kl": l_kl.item()}

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = len(self.block)
        idx = torch.randperm(m)[:n] if n <= m else torch.randint(m, (n,))
        return self.block[idx].float().div_(255.0), (self.block_logits[idx] if self.block_logits is not None else None)

    # -- footprint and persistence ---------------------------------------------------------------
    def footprint(self) -> dict:
        weights = sum(t.numel() * t.element_size() for t in self.vae.state_dict().values())
        opt = sum(v.numel() * v.element_size() for s in self.opt.state.values() for v in s.values()
                  if torch.is_tensor(v))
        block = 0
        if self.block is not None:
            block = self.block.numel() + (self.block_logits.numel() * 4 if self.block_logits is not None else 0)
        return {"bytes": weights + opt + block, "weights_bytes": weights, "optimizer_bytes": opt,
                "block_bytes": block, "params": sum(p.numel() for p in self.vae.parameters())}

    def save(self, directory: Path) -> dict:
        return {"vae": self.vae.state_dict(), "opt": self.opt.state_dict(), "block": self.block,
                "block_logits": self.block_logits, "updates": self.updates}

    def load(self, directory: Path, state: dict) -> None:
        self.vae.load_state_dict(state["vae"])
        self.opt.load_state_dict(state["opt"])
        self.block, self.block_logits, self.updates = state["block"], state["block_logits"], state["updates"]

    def prune(self, directory: Path, state: dict) -> None:
        pass
