"""The data-free distillation loop shared by every synthesizer and every replay strategy.

1. warm-up (``warmup`` share of the budget): synthesis only, as Fast-DFKD's warm-up epochs;
2. rounds: ``kd_steps`` student updates, with one synthesis call every ``synth_every`` updates; each
   student batch takes a share ``replay.ratio`` of replay samples (``datafree.replay``: none, a memory
   bank, a VAE) and the rest from the *novel window*, the newest ``novel_window`` synthetic samples
   (by default as many as one round synthesizes); then, outside the budget clock, an evaluation if
   held-out data was given, one metrics row and a checkpoint (student, optimiser, synthesizer, novel
   window, replay state, RNG).
The learning rate follows a cosine over budget progress (wall-clock or rounds).  With ``ema`` > 0 the
student that is evaluated, returned and saved is an exponential moving average of the trained weights
(parameters and BatchNorm statistics; decay ``min(ema, (1 + t) / (10 + t))`` at step t, the warm-up
timm's ModelEma uses), which smooths the round-to-round swings that a user stopping at a random time
would otherwise get; off by default.  With
``cache_teacher`` the teacher's logits are computed once per sample, for the image and its mirror,
when the sample enters the window (or the replay block) - exact for the mirror augmentation used then,
and it removes the teacher forward pass from every student step (0.53 -> 0.35 s per 256-batch for
resnet56 -> resnet20 on 2 cores).  Without it, every batch gets random crop + flip and a live teacher pass.
Replays that come without logits under the cache (a VAE's blended replays: new images each step) get a live
teacher pass on their rows only, after the mirror augmentation.
Student, teacher and synthesis run under bf16 autocast where the CPU runs it fast (``bf16="auto"``:
AVX512-BF16, AMX, AVX512, Arm BF16; datafree.precision) and in float32 elsewhere: on an AVX2-only CPU bf16
is about ten times slower.  Held-out data is only ever reported, never used to select anything.
"""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from datafree.config import make_checked, to_dict
from datafree.data.augment import normalize, random_crop_flip
from datafree.distill.kd import kd_loss
from datafree.errors import DatafreeError
from datafree.evaluate import evaluate
from datafree.io.budget import Budget, Stopwatch, cosine
from datafree.models import ModelMeta
from datafree.precision import resolve_bf16
from datafree.progress import Progress
from datafree.replay import ReplayContext, build_replay, make_replay_config
from datafree.run import RunDir
from datafree.synthesis import SamplePool, TeacherInverter, build_synthesizer, make_config
from datafree.synthesis.base import is_collapsed
from datafree.synthesis.guide import Guide, GuideConfig, load_guide


@dataclass
class DistillConfig:
    synthesizer: str = "generator"
    synth: dict = field(default_factory=dict)  # options of the synthesizer's own config
    replay: str = "memory-bank"  # none | memory-bank | vae
    replay_opts: dict = field(default_factory=dict)  # options of the replay strategy's own config
    guide: str | None = None  # condensed / few-shot npz that guides the inversion (synthesis.guide)
    guide_opts: dict = field(default_factory=dict)  # options of GuideConfig
    budget: str | None = "10m"
    rounds: int | None = None
    batch_size: int = 256
    kd_steps: int = 100
    synth_every: int = 10
    warmup: float = 0.1  # share of the budget spent only synthesizing before the first student step
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 20.0
    loss: str = "kl"
    augment: bool = True
    flip: bool = True  # mirror augmentation of the student's batches (off for digits and text; not the inversion's)
    cache_teacher: bool = True  # teacher logits cached per sample (+ mirror): no teacher pass per step
    bf16: bool | str = "auto"  # bf16 autocast: auto (where the CPU runs it fast: datafree.precision), True, False
    channels_last: bool = True
    novel_window: int | None = None  # newest synthetic samples the student draws from; None: one round's worth
    eval_every: int = 1
    ema: float = 0.0  # > 0: evaluate / return an EMA of the student's weights with this decay per step
    seed: int = 0
    deterministic: bool = False


@dataclass
class DistillResult:
    student: nn.Module
    history: list[dict]
    summary: dict
    run_dir: str | None = None


STATE_METRICS = frozenset({"bank_size"})  # logged per round as the last value, not the mean


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:  # numpy's range
        raise DatafreeError(f"the seed must be from 0 to 2^32-1, got {seed}")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def summarize(history: list[dict]) -> dict:
    """Accuracy over the run: last, mean (expected accuracy at a random stop), variance, max drawdown (as the
    replay issue defines it: the largest fall between two consecutive evaluations, not peak to trough)."""
    acc = [h["accuracy"] for h in history if h.get("accuracy") is not None]
    if not acc:
        return {}
    drops = [a - b for a, b in zip(acc, acc[1:])]
    return {"last_accuracy": acc[-1], "mean_accuracy": float(np.mean(acc)), "var_accuracy": float(np.var(acc)),
            "max_drawdown": max([0.0, *drops]), "evaluations": len(acc)}


def method_configs(cfg: DistillConfig, guided: bool = False) -> dict:
    """The configs of the strategies ``cfg`` names, defaults filled in: ``synthesizer``, ``replay``, and
    ``guide`` when the run has one (``cfg.guide``, or ``guided``: guide samples given in memory)."""
    if cfg.guide_opts and not (cfg.guide or guided):  # they would be silently ignored
        raise DatafreeError("guide options (--guide-mode, --guide-opt / guide_opts) are given but no guide samples "
                            "(--guide)")
    out = {"synthesizer": make_config(cfg.synthesizer, **cfg.synth),
           "replay": make_replay_config(cfg.replay, **cfg.replay_opts)}
    if cfg.guide or guided:
        out["guide"] = make_checked(GuideConfig, cfg.guide_opts, "the guide")
    return out


class Distiller:
    def __init__(self, teacher: nn.Module, student: nn.Module, meta: ModelMeta, cfg: DistillConfig,
                 run: RunDir | None = None, eval_x: torch.Tensor | None = None, eval_y: torch.Tensor | None = None,
                 progress: bool = True, guide_data=None) -> None:
        if cfg.loss not in ("kl", "l1"):
            raise DatafreeError(f"unknown KD loss '{cfg.loss}'; use kl or l1")
        self.cfg, self.meta, self.run = cfg, meta, run
        self.budget = Budget.parse(cfg.budget, cfg.rounds)
        self.bf16 = resolve_bf16(cfg.bf16)
        self.teacher, self.student = teacher.eval(), student
        methods = method_configs(cfg, guided=guide_data is not None)
        self.synth_cfg, self.replay_cfg = methods["synthesizer"], methods["replay"]
        self.guide_cfg = methods.get("guide")
        # --deterministic keeps the BN-statistics term eager: a resumed process engages the torch.compile'd one
        # afresh, and its kernels did not repeat the uninterrupted run's numerics (kill -9 + resume: other weights)
        self.inverter = TeacherInverter(teacher, meta.num_classes, meta.mean, meta.std,
                                        getattr(self.synth_cfg, "bn_momentum", 0.0), self.bf16,
                                        cfg.channels_last, fused=not cfg.deterministic)
        self.synthesizer = build_synthesizer(cfg.synthesizer, self.synth_cfg, self.inverter, meta.input_shape)
        per_round = math.ceil(cfg.kd_steps / cfg.synth_every) * getattr(self.synth_cfg, "batch_size", 64)
        self.window = cfg.novel_window or per_round
        self.pool = SamplePool(self.window, meta.input_shape)  # the novel window
        self.replay = build_replay(cfg.replay, self.replay_cfg, ReplayContext(
            self.inverter, tuple(meta.input_shape), meta.num_classes, cfg.cache_teacher))
        self.synth_off = cfg.synthesizer == "none"
        self.guide: Guide | None = None
        if self.guide_cfg is not None:
            data = load_guide(guide_data if guide_data is not None else cfg.guide, meta.input_shape, meta.num_classes)
            self.guide = Guide(self.guide_cfg, data, self.inverter, str(cfg.guide or "data given in memory"))
            if self.guide.guided and not getattr(self.synthesizer, "supports_guide", False) and not self.synth_off:
                raise DatafreeError(f"synthesizer '{cfg.synthesizer}' cannot be guided by condensed samples: use "
                                    "--synthesizer generator or pixel, or --guide-mode mix")
            self.synthesizer.guide = self.guide
        elif cfg.synthesizer == "none":
            raise DatafreeError("--synthesizer none trains on guide samples only: pass --guide condensed.npz")
        self.opt = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=True)
        if not 0.0 <= cfg.ema < 1.0:
            raise DatafreeError(f"ema must be in [0, 1) (a decay per student step, e.g. 0.99), got {cfg.ema}")
        self.ema = copy.deepcopy(student).eval().requires_grad_(False) if cfg.ema else None
        self.ema_steps = 0
        self.eval_x = eval_x  # already in the model input space
        self.eval_y = eval_y
        self.history: list[dict] = []
        self.round, self.clock = 0, Stopwatch()
        self.progress = Progress("distill", progress)
        self.t_synth = self.t_kd = self.t_replay = 0.0
        self.n_synth = self.n_kd = self.n_replayed = 0
        self.budget_progress = 0.0

    def resolved_config(self) -> dict:
        out = {"distill": {**to_dict(self.cfg), "novel_window": self.window, "bf16": self.bf16},
               "synthesizer": to_dict(self.synth_cfg), "replay": to_dict(self.replay_cfg)}
        if self.guide_cfg is not None:
            out["guide"] = to_dict(self.guide_cfg)
        return out

    # -- one round ------------------------------------------------------------------------------
    def _synthesize(self, acc: dict) -> None:
        t0 = time.perf_counter()
        batch = self.synthesizer.synthesize(self.student, adversarial=self.round > 0)
        x, logits = SamplePool.quantize(batch.images), None  # exactly what the pool stores
        if self.cfg.cache_teacher:  # logits of the image and of its mirror image
            logits = self.inverter.view_logits(x)
        self.pool.add(x, logits)
        t1 = time.perf_counter()
        self.t_synth += t1 - t0
        self.n_synth += len(batch.images)
        metrics = {**batch.metrics, **self.replay.observe(x, logits, self.budget_progress)}
        self.t_replay += time.perf_counter() - t1
        for k, v in metrics.items():
            acc.setdefault(k, []).append(v)

    def _kd_step(self) -> float:
        cfg = self.cfg
        n_guide = 0
        if self.guide is not None:
            n_guide = cfg.batch_size if self.synth_off else round(self.guide.cfg.ratio * cfg.batch_size)
        n_rep = round(self.replay.ratio * (cfg.batch_size - n_guide)) if self.replay.ready else 0
        x, cached = (self.pool.sample(cfg.batch_size - n_guide - n_rep) if n_guide < cfg.batch_size
                     else (torch.empty(0, *self.meta.input_shape),
                           torch.empty(0, 2, self.meta.num_classes) if cfg.cache_teacher else None))
        live = slice(0)  # rows of replays that come without logits (new images): a live teacher pass
        if n_rep:
            xr, cr = self.replay.sample(n_rep)
            if cached is not None and cr is None:  # placeholders, filled after the augmentation
                live, cr = slice(len(x), len(x) + n_rep), cached.new_zeros(n_rep, *cached.shape[1:])
            x = torch.cat([x, xr])
            cached = torch.cat([cached, cr]) if cached is not None else None
            self.n_replayed += n_rep
        if cached is not None:  # mirror augmentation, exact cached teacher logits for either view
            flip = torch.rand(len(x)) < 0.5 if cfg.augment and cfg.flip else torch.zeros(len(x), dtype=torch.bool)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            t = cached[torch.arange(len(x)), flip.long()]
        elif cfg.augment:
            x = random_crop_flip(x, padding=max(1, x.shape[-1] // 8), flip=cfg.flip)
        if n_guide:  # condensed / few-shot samples under DSA, with a live teacher pass
            xg, tg = self.guide.student_batch(n_guide)
            x = torch.cat([x, xg])
            if cached is not None:
                t = torch.cat([t, tg])
        x = normalize(x, self.meta.mean, self.meta.std)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if cached is None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                t = self.teacher(x).float()
        elif live.stop:  # the teacher reads them as the student will (Beyer et al. 2022)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                t[live] = self.teacher(x[live]).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            s = self.student(x).float()
        n0 = len(x) - n_guide
        if n_guide and n0 and self.guide.cfg.kd_weight:  # optional: L_S = KL(synthetic) + w * KL(condensed)
            loss = kd_loss(s[:n0], t[:n0], cfg.temperature, cfg.loss) + \
                self.guide.cfg.kd_weight * kd_loss(s[n0:], t[n0:], cfg.temperature, cfg.loss)
        else:
            loss = kd_loss(s, t, cfg.temperature, cfg.loss)
        if not torch.isfinite(loss):
            if self.run is None:
                advice = "lower the lr (or disable bf16) and rerun"
            elif self.run.has_checkpoint():
                advice = "the last checkpoint is intact: lower --lr (or disable bf16) and rerun with --resume"
            else:
                advice = "no round had finished, so nothing was kept: lower --lr (or disable bf16) and start afresh"
            raise DatafreeError(f"the KD loss became {loss.item()} in round {self.round}; {advice}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema is not None:
            self._update_ema()
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * student over parameters and float buffers (BN statistics); integer
        buffers (BN's batch counter) are copied."""
        d = min(self.cfg.ema, (1 + self.ema_steps) / (10 + self.ema_steps))
        self.ema_steps += 1
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.student.parameters()), 1.0 - d)
        for e, b in zip(self.ema.buffers(), self.student.buffers()):
            e.lerp_(b, 1.0 - d) if e.is_floating_point() else e.copy_(b)

    def _bar(self, p: float) -> float:
        """What the progress bar shows for budget progress p: with a round budget the warm-up's synthesis calls
        come first and count too (a share warmup / (1 + warmup) of the work), so the bar moves and its ETA holds
        from the first call on; with a wall-clock budget, p itself (it includes the warm-up's time)."""
        if self.budget.rounds is None or self.synth_off:
            return p
        w = self.cfg.warmup / (1 + self.cfg.warmup)
        return w + (1 - w) * p

    def _progress(self, step: int) -> float:
        """Budget progress in [0, 1] at KD step ``step`` of the current round (drives the schedule)."""
        if self.budget.rounds is not None:
            return min(1.0, (self.round - 1 + step / self.cfg.kd_steps) / self.budget.rounds)
        return min(1.0, self.clock.elapsed / self.budget.seconds)

    def _round(self) -> dict:
        cfg, acc = self.cfg, {}
        self.student.train()
        losses, lr = [], self.cfg.lr
        for step in range(cfg.kd_steps):
            if step % cfg.synth_every == 0 and not self.synth_off:
                self._synthesize(acc)  # its replay update reads the previous step's progress (checkpointed)
            self.budget_progress = self._progress(step)
            lr = cfg.lr * cosine(self.budget_progress)
            for g in self.opt.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            losses.append(self._kd_step())
            self.t_kd += time.perf_counter() - t0
            self.n_kd += cfg.batch_size
            p = self._progress(step + 1)
            self.progress.update(self._bar(p), self.clock.elapsed, f"round {self.round} kd {np.mean(losses):.3f}")
            if self.budget.rounds is None and p >= 1.0:  # wall-clock budget spent mid-round
                break
        row = {"round": self.round, "elapsed_s": round(self.clock.elapsed, 2), "kd_loss": float(np.mean(losses)),
               "lr": lr, "replay_bytes": self.replay.footprint()["bytes"]}
        # per-call metrics: the round's mean, but a state (how full the bank is) as it stands at the round's end
        row.update({k: float(v[-1] if k in STATE_METRICS else np.mean(v)) for k, v in acc.items()})
        stats = {"max_class_frac": row.get("max_class_frac", 0.0),
                 "effective_classes": row.get("effective_classes", 1e9)}
        row["collapse"] = (bool(acc) and is_collapsed(stats, self.meta.num_classes)) or row["kd_loss"] < 1e-4
        return row

    # -- checkpoint -----------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        if self.run is None:
            return
        ck = self.run.ckpt_dir
        pool = self.pool.flush(ck / "pool")
        replay = self.replay.save(ck / "replay")
        self.run.save_checkpoint({
            "round": self.round, "elapsed": self.clock.elapsed, "student": self.student.state_dict(),
            "opt": self.opt.state_dict(), "synth": self.synthesizer.state_dict(), "pool": pool,
            "ema": self.ema.state_dict() if self.ema is not None else None, "ema_steps": self.ema_steps,
            "replay_name": self.cfg.replay, "replay": replay, "history": self.history, "rng": torch.get_rng_state(),
            "counters": [self.t_synth, self.t_kd, self.t_replay, self.n_synth, self.n_kd, self.n_replayed],
            "budget_progress": self.budget_progress,  # what the next round's first synthesis hands the replay
        })
        # only now that the checkpoint names them may the files it no longer needs go
        SamplePool.prune(ck / "pool", pool)
        self.replay.prune(ck / "replay", replay)

    def _restore(self) -> bool:
        state = self.run.load_checkpoint() if self.run else None
        if state is None:
            return False
        try:
            self.student.load_state_dict(state["student"])
        except RuntimeError:
            raise DatafreeError(f"the checkpoint in '{self.run.path}' belongs to a different student; "
                                "use another --out or drop --resume") from None
        ema_then = state.get("ema") is not None
        if "pool" not in state or state.get("replay_name") != self.cfg.replay or ema_then != (self.ema is not None):
            raise DatafreeError(f"the checkpoint in '{self.run.path}' was made with other settings (replay "
                                f"'{state.get('replay_name', '?')}', ema {'on' if ema_then else 'off'}); resume with "
                                "the same options or use another --out")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self.ema_steps = state["ema_steps"]
        try:  # a run directory without config.yaml skipped the settings check of RunDir.claim
            self.opt.load_state_dict(state["opt"])
            self.synthesizer.load_state_dict(state["synth"])
            self.pool = SamplePool.restore(self.run.ckpt_dir / "pool", state["pool"], self.window,
                                           self.meta.input_shape)
            self.replay.load(self.run.ckpt_dir / "replay", state["replay"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise DatafreeError(f"the checkpoint in '{self.run.path}' does not fit these settings ({type(e).__name__}"
                                f": {str(e).splitlines()[0][:120]}); resume with the options it was made with or "
                                "use another --out") from None
        self.round, self.history = state["round"], list(state["history"])
        self.clock = Stopwatch(state["elapsed"])
        self.t_synth, self.t_kd, self.t_replay, self.n_synth, self.n_kd, self.n_replayed = state["counters"]
        self.budget_progress = state.get("budget_progress", 0.0)  # checkpoints before it was saved: 0, as then
        torch.set_rng_state(state["rng"])
        self.run.truncate_metrics(self.round)
        return True

    def _warmup(self) -> None:
        """Fast-DFKD's warm-up: synthesize only, so the generator improves before the student starts
        (it would otherwise spend its high-learning-rate phase on the generator's first, poor samples)."""
        if self.synth_off:
            return
        if self.budget.rounds is not None:
            calls = math.ceil(self.cfg.warmup * self.budget.rounds * self.cfg.kd_steps / self.cfg.synth_every)
            w = self._bar(0.0)
            for i in range(calls):
                self._synthesize({})
                self.progress.update(w * (i + 1) / calls, self.clock.elapsed, "warm-up: synthesis only")
            return
        self._synthesize({})  # at least one batch, so the pool is never empty
        while self.clock.elapsed < self.cfg.warmup * self.budget.seconds:
            self.budget_progress = self.clock.elapsed / self.budget.seconds
            self._synthesize({})
            self.progress.update(self.clock.elapsed / self.budget.seconds, self.clock.elapsed,
                                 "warm-up: synthesis only")

    # -- main loop ------------------------------------------------------------------------------
    def _evaluate(self) -> float | None:
        if self.eval_x is None:
            return None
        model = self.ema if self.ema is not None else self.student
        return evaluate(model, self.eval_x, self.eval_y, bf16=self.bf16)["accuracy"]

    def run_loop(self, resume: bool = False) -> DistillResult:
        """The run; ``deterministic`` runs deterministic algorithms on one intra-op thread, both restored
        afterwards: with two, 7 of 95 processes took another path from the first warm-up synthesis call on (a
        race not traced; README)."""
        if not self.cfg.deterministic:
            return self._run_loop(resume)
        threads = torch.get_num_threads()
        algorithms = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        torch.set_num_threads(1)
        try:
            return self._run_loop(resume)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])

    def _run_loop(self, resume: bool) -> DistillResult:
        cfg = self.cfg
        seed_everything(cfg.seed, cfg.deterministic)
        resumed = resume and self._restore()  # restores the RNG state the checkpoint saved
        if not resumed:
            if self.run:
                self.run.reset_metrics()
        if cfg.channels_last:
            self.teacher.to(memory_format=torch.channels_last)
            self.student.to(memory_format=torch.channels_last)
            if self.ema is not None:
                self.ema.to(memory_format=torch.channels_last)
        self.clock.start()
        if not resumed:
            self._warmup()
        while not self.budget.done(self.clock.elapsed, self.round):
            self.round += 1
            row = self._round()
            self.clock.pause()
            last = self.budget.done(self.clock.elapsed, self.round)
            if cfg.eval_every and (self.round % cfg.eval_every == 0 or last):
                row["accuracy"] = self._evaluate()
            row["wall_time"] = time.time()
            self.history.append(row)
            if row["collapse"]:
                warnings.warn(f"round {self.round}: generator collapse suspected (max class share "
                              f"{row.get('max_class_frac', 0):.2f}, kd loss {row['kd_loss']:.2e})", stacklevel=2)
            if self.run:
                self.run.log_metrics(row)
            self._checkpoint()
            info = f"round {self.round} kd {row['kd_loss']:.3f}"
            if row.get("accuracy") is not None:
                info += f" acc {row['accuracy']:.4f}"
            self.progress.update(self._bar(self.budget.progress(self.clock.elapsed, self.round)), self.clock.elapsed,
                                 info, force=True)
            self.clock.start()
        self.clock.pause()
        self.progress.close()
        summary = {**summarize(self.history), "rounds": self.round, "elapsed_s": self.clock.elapsed,
                   "synthetic_images_per_s": self.n_synth / max(1e-9, self.t_synth),
                   "student_images_per_s": self.n_kd / max(1e-9, self.t_kd),
                   "synthetic_images": self.n_synth, "student_images": self.n_kd,
                   "replayed_images": self.n_replayed, "replay": self.cfg.replay, "bf16": self.bf16,
                   "threads": torch.get_num_threads(),
                   "replay_footprint": self.replay.footprint(), "novel_window": self.window,
                   "time_split_s": {"synthesis": self.t_synth, "student": self.t_kd, "replay": self.t_replay},
                   "guide": self.guide.describe() if self.guide is not None else None,
                   "guide_mode": self.guide_cfg.mode if self.guide_cfg is not None else None,
                   "collapse_rounds": sum(bool(h["collapse"]) for h in self.history)}
        student = self.ema if self.ema is not None else self.student  # with ema, the averaged weights are the result
        if cfg.channels_last:
            student.to(memory_format=torch.contiguous_format)
        return DistillResult(student, self.history, summary, str(self.run.path) if self.run else None)
