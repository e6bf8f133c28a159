"""The ``datafree`` argument parser: one sub-parser per command, the value types that check each option, and
argparse errors as one line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

from datafree.prune import CRISPConfig
from datafree.quant import ALGORITHMS
from datafree.synthesis import GeneratorConfig, PixelConfig

MODEL_HELP = ("zoo name (`datafree models`), timm:NAME or torchvision:NAME where that library is installed (built "
              "with random weights: pass the trained ones), or path/to/file.py:factory")
EPILOG = ("Models: run `datafree models`. Budgets: 90s, 15m, 1h30m (method wall-clock; a bare number is seconds), "
          "or 40r: 40 rounds of distill (--rounds 40), 40 iterations of condense.")


def _defaults(cls: type, flags: tuple[str, ...] = ()) -> str:
    """``key=default, ...`` of a method's config dataclass (but the ``flags`` that have options of their own): the
    options a KEY=VALUE flag takes, never out of date."""

    def show(v: object) -> str:
        return json.dumps(v) if isinstance(v, (bool, type(None), list, tuple)) else str(v)

    return ", ".join(f"{f.name}={show(f.default)}" for f in dataclasses.fields(cls)
                     if f.default is not dataclasses.MISSING and f.name not in flags)


def _shape(s: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in s.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 3,32,32 (got '{s}')") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"input shape must be C,H,W (got '{s}')")
    return shape


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,6,9, got '{s}'") from None


def _floats(s: str) -> tuple[float, ...]:
    try:
        v = tuple(float(x) for x in s.split(","))
    except ValueError:
        v = ()
    if not v or not all(math.isfinite(x) for x in v):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.5,0.5,0.5, got '{s}'")
    return v


def _positive_floats(s: str) -> tuple[float, ...]:
    v = _floats(s)
    if not all(x > 0 for x in v):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got '{s}'")
    return v


def _int_at_least(lo: int, hi: int | None = None):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{s}'") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {f'from {lo} to {hi}' if hi is not None else f'at least {lo}'}, "
                                             f"got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{s}'") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got '{s}'")
    return v


_pos, _nonneg, _seed = _int_at_least(1), _int_at_least(0), _int_at_least(0, 2**32 - 1)  # numpy's seed range


def _kv(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{s}'")
    k, v = s.split("=", 1)
    try:
        return k.replace("-", "_"), json.loads(v)
    except json.JSONDecodeError:
        return k.replace("-", "_"), v


def _calib_args(p: argparse.ArgumentParser) -> None:
    """Calibration data of quantize and sweep."""
    p.add_argument("--calib", default="synthetic",
                   help="'synthetic' (default: inverted from the model, no real data), real data (npz / folder), or a "
                        "calib.safetensors an earlier quantize / sweep run saved (reused as it was made)")
    p.add_argument("--calib-samples", type=_pos, default=512, help="calibration images (default 512)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=_shape, help="C,H,W; only for models outside the zoo")
    p.add_argument("--num-classes", type=_pos, help="class count; only for models outside the zoo")
    p.add_argument("--mean", type=_floats, help="per-channel input mean, e.g. 0.49,0.48,0.45 (zoo models know it)")
    p.add_argument("--std", type=_positive_floats, help="per-channel input std (zoo models know it)")


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line errors of the rest of the CLI (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"datafree: error: {self.prog.removeprefix('datafree').strip() or 'datafree'}: {message} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="datafree", description="Compress a trained image classifier without its "
                                 "training data.", epilog=EPILOG)
    ap.add_argument("--version", action="version", version="datafree 0.1.0")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = sub.add_parser("distill", help="data-free distillation of a teacher into a student",
                       description="Invert the teacher into synthetic images and distill the student on them. "
                       "No training image is used; --eval-data is only for reporting.", epilog=EPILOG)
    d.add_argument("--teacher", required=True, help=MODEL_HELP)
    d.add_argument("--teacher-weights", help="the trained teacher's weights (.safetensors or a torch state_dict "
                   "file); required unless the teacher is a path/to/file.py:factory that loads its own")
    d.add_argument("--student", required=True, help=MODEL_HELP)
    g = d.add_mutually_exclusive_group()
    g.add_argument("--budget", default="10m", help="method wall-clock budget, e.g. 90s, 15m, 1h30m (default 10m); "
                   "40r: 40 rounds, as --rounds 40")
    g.add_argument("--rounds", type=_pos, help="budget in rounds instead of wall-clock (reproducible)")
    d.add_argument("--eval-data", help="held-out npz / image folder / mnist5k:test, for reporting only")
    d.add_argument("--out", required=True, help="run directory (created; must be writable)")
    d.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    d.add_argument("--seed", type=_seed, default=0,
                   help="random seed of the student, generator and sampling (0 .. 2^32-1; default 0)")
    d.add_argument("--synthesizer", default="generator", choices=["generator", "pixel", "none"],
                   help="generator: Fast-DFKD generator inversion (default); pixel: DeepInversion; none: learn from "
                   "the --guide samples alone")
    d.add_argument("--synth-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help=f"synthesizer option, repeatable. generator: {_defaults(GeneratorConfig)} (meta=fomaml|reptile|"
                        f"none); pixel: {_defaults(PixelConfig)}")
    d.add_argument("--replay", default="memory-bank", choices=["none", "memory-bank", "vae"],
                   help="what the student rehearses besides the newest samples: memory-bank (MB-DFKD, default), "
                   "vae (PRE-DFKD generative pseudo replay, stores no sample) or none")
    d.add_argument("--replay-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="replay option, repeatable. memory-bank: capacity=N (samples), capacity_bytes=40MB, "
                   "policy=reservoir|fifo, ratio=0.5, add_every=1, add_fraction=1.0, mix=0 (> 0: replay Beta(mix, mix) "
                   "pixel blends of two stored samples, read by a live teacher); vae: ratio=0.25, lr=5e-4, "
                   "schedule=constant|cosine, steps=4, logit_steps=1, latent_channels=2, latent_side=16, width=16, "
                   "logit=0.1, kl=1e-5, self_replay=0.25, codes=nudged|encoded, pool=320, code_bits=8|4|2, "
                   "logit_dtype=float32|float16, fresh=32, relabel=32, nudge_steps=5, nudge_lr=0.05, nudge_bn=3, "
                   "prior=normal|fitted, prior_rank=64, prior_decay=0.9, min_updates=100, freeze=0 (encoded codes: "
                   "budget share after which the VAE stops learning and its pool fills), mix=0 (> 0: decode "
                   "Beta(mix, mix) blends of two pool codes, read by a live teacher)")
    d.add_argument("--guide", help="condensed set or k real images per class (npz / folder) that guides the "
                   "inversion (Condensed Data Expansion) and joins the student's data; the report lists it")
    d.add_argument("--guide-mode", choices=["guided", "mix"],
                   help="guided: an alignment loss (a feature discriminator by default) steers the inversion "
                   "(generator or pixel) towards the guide samples (default); mix: no guidance (the naive baseline); "
                   "in both the samples take a share of each student batch")
    d.add_argument("--guide-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="guide option, repeatable: mode=guided|mix (as --guide-mode), "
                   "align=adversarial|feature_matching|embedding (the generator's "
                   "alignment loss: BCE on the discriminator, matching each class's mean of its hidden features, or "
                   "Distribution Matching's class-mean embedding under random ConvNets with no discriminator; "
                   "embed_width=32), labels=given|teacher (pair each guide image with its label or the teacher's "
                   "class), "
                   "adv=1 (alignment weight), weighting=fixed|adaptive (adaptive: adv is L_FA's gradient on the images "
                   "relative to the inversion losses', re-measured every adapt_every=5 calls), "
                   "ratio=0.1 (share of student batch), "
                   "kd_weight=0 (> 0: a separate KD term of that weight on the guide samples), lr_d=2e-4, "
                   "d_steps=1, hidden=256, strategy=color_crop_cutout_flip_scale_rotate, noise_target=0.6 (ADA's "
                   "overfitting target for D's adaptive feature noise; none: off), noise_step=0.02, noise_max=4")
    d.add_argument("--novel-window", type=_pos, help="the newest synthetic samples the student draws its "
                   "non-replay share from (default: as many as one round synthesizes)")
    d.add_argument("--batch-size", type=_pos, help="student batch size (default 256)")
    d.add_argument("--kd-steps", type=_pos, help="student steps per round (default 100)")
    d.add_argument("--synth-every", type=_pos, help="student steps per synthesis call (default 10)")
    d.add_argument("--lr", type=_positive_float, help="student SGD learning rate, cosine-decayed (default 0.05)")
    d.add_argument("--temperature", type=_positive_float, help="KD temperature (default 20)")
    d.add_argument("--ema", type=float, help="evaluate, report and save an exponential moving average of the "
                   "student's weights with this decay per step (e.g. 0.99; default: off, the last weights)")
    d.add_argument("--loss", choices=["kl", "l1"], help="KD loss: KL with temperature (default) or L1 on logits")
    d.add_argument("--no-flip", action="store_true",
                   help="no mirror augmentation of the student's batches (digits, text); the generator's own "
                        "crop + flip while inverting is its option augment (--synth-opt augment=false)")
    d.add_argument("--no-teacher-cache", action="store_true",
                   help="run the teacher on every augmented batch (random crop + flip) instead of caching its "
                   "logits per sample and its mirror")
    d.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast: auto (default) turns it on only where the CPU runs it fast (AVX512-BF16, AMX, "
                   "AVX512, Arm BF16; an AVX2-only CPU runs bf16 about 10x slower than float32), on / off force it")
    d.add_argument("--no-bf16", action="store_true", help="run everything in float32 (same as --bf16 off)")
    d.add_argument("--no-channels-last", action="store_true", help="keep the default NCHW memory format")
    d.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms on one intra-op thread, so that reruns and --resume give the same "
                        "weights (about 1.6x slower on two cores)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_args(d)

    t = sub.add_parser("train", help="supervised training on real labelled data (teachers, baselines)",
                       description="Train a model with SGD + cosine on real labelled images (random crop, flips): "
                       "teachers and supervised baselines. Writes model.safetensors, metrics.jsonl and a report in "
                       "--out; a directory holding a finished run is refused.", epilog=EPILOG)
    t.add_argument("--model", required=True, help=MODEL_HELP)
    t.add_argument("--data", required=True, help="npz (x uint8 NHWC, y), image folder, or mnist5k")
    t.add_argument("--eval-data", help="held-out data for the final accuracy")
    t.add_argument("--epochs", type=_pos, default=10, help="passes over the data (default 10)")
    t.add_argument("--lr", type=_positive_float, default=0.05, help="SGD learning rate, cosine-decayed (default 0.05)")
    t.add_argument("--batch-size", type=_pos, default=128, help="batch size (default 128)")
    t.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    t.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_args(t)

    e = sub.add_parser("evaluate", help="accuracy of a model on labelled data",
                       description="Top-1 accuracy and loss of a model with the given weights on labelled images, "
                       "normalised with the model's recorded mean/std (or --mean/--std).")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    e.add_argument("--weights", required=True, help="model weights (.safetensors or a torch state_dict), or a quantize "
                   "run's quantized.safetensors: the quantized model is evaluated")
    e.add_argument("--data", required=True, help="npz, image folder, mnist5k:test")
    e.add_argument("--json", action="store_true", help="print JSON")
    _model_args(e)

    x = sub.add_parser("export", help="a model to ONNX (INT8 for quantize's quantized.safetensors), measured",
                       description="Write a model to ONNX with a dynamic batch: FP32 for float weights, INT8 QDQ "
                       "(int8 weights and activations, integer kernels in onnxruntime) for a quantize run's "
                       "quantized.safetensors made with int8 weights and activations (quantize --onnx writes both). "
                       "Checks the file against the PyTorch model (top-1 agreement, largest logit difference) on "
                       "the --eval-data images or random inputs, gives its onnxruntime accuracy with --eval-data, "
                       "and its latency.")
    x.add_argument("--model", required=True, help=MODEL_HELP)
    x.add_argument("--weights", help="model weights (.safetensors or a torch state_dict), or quantized.safetensors")
    x.add_argument("--out", required=True, help="the .onnx file to write (replaced atomically)")
    x.add_argument("--eval-data", help="labelled images (npz, folder, mnist5k:test): the ONNX model's accuracy")
    x.add_argument("--batch", type=_pos, default=64, help="batch size of the latency measurement (default 64)")
    x.add_argument("--json", action="store_true", help="print JSON")
    _model_args(x)

    m = sub.add_parser("demo", help="the embedded MNIST-5k demo: teacher LeNet-5 -> data-free LeNet-5-half",
                       description="Train a LeNet-5 teacher on the embedded MNIST-5k digits (reused from --out/teacher "
                       "when there), then distill a LeNet-5-half from it without any digit; a rerun replaces "
                       "--out/student. Prints the accuracies; writes report.json, and each stage's run directory "
                       "(teacher/, student/) its report.md.")
    m.add_argument("--out", default="runs/demo",
                   help="demo directory: teacher/ (reused when present) and student/ (default runs/demo)")
    m.add_argument("--budget", default="240s", help="data-free distillation budget (default 240s)")
    m.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")

    q = sub.add_parser("quantize", help="post-training quantization (integer / minifloat), data-free by default",
                       description="Quantize weights and activations of a trained model. Calibration uses images "
                       "inverted from the model itself unless --calib gives real data; --eval-data is only for "
                       "reporting.", epilog="Formats: int2..int16 (uint8, int4_asym), fp8_e4m3, fp8_e5m2, "
                       "fp8_e4m3fnuz, fp8_e5m2fnuz, fp6_e3m2, fp6_e2m3, fp4_e2m1, or any ExMy such as e3m2, e2m1.")
    q.add_argument("--model", required=True, help=MODEL_HELP)
    q.add_argument("--weights", required=True, help="model weights (.safetensors or a torch state_dict)")
    q.add_argument("--w", default="int8", help="weight format (default int8)")
    q.add_argument("--a", default="int8", help="activation format, or 'none' for weight-only (default int8)")
    q.add_argument("--algo", default="", help="comma-separated: cle, smoothquant, adaround, gptq, bias_correction "
                   "(default: round-to-nearest)")
    q.add_argument("--algo-opt", type=_kv, action="append", default=[], metavar="ALGO.KEY=VALUE",
                   help="algorithm option, repeatable: " + "; ".join(
                       f"{name}: {_defaults(cls)}" for name, (cls, _) in ALGORITHMS.items()))
    q.add_argument("--granularity", choices=["tensor", "channel", "group"], default="channel",
                   help="weight scales (default: per output channel)")
    q.add_argument("--group-size", type=_pos,
                   help="weights per scale with --granularity group: consecutive entries of each output "
                        "channel's flattened C*kh*kw fan-in (default 32)")
    q.add_argument("--observer", choices=["minmax", "percentile", "mse"], default="mse",
                   help="how scales are chosen from the calibration statistics (default mse)")
    q.add_argument("--scale-type", choices=["float", "po2"], default="float",
                   help="float or power-of-two scales (default float)")
    q.add_argument("--edge-bits", type=_nonneg, choices=[0, *range(2, 9)], metavar="{0,2..8}", default=8,
                   help="the first and last layers are widened to at least this many bits, never narrowed "
                        "(same family: int8, fp8_e4m3; default 8; 0: as the rest)")
    q.add_argument("--quantize-residuals", action="store_true",
                   help="also quantize residual-add inputs (integer-only inference; on with --onnx)")
    _calib_args(q)
    q.add_argument("--eval-data", help="held-out npz / folder / mnist5k:test, for reporting only")
    q.add_argument("--onnx", action="store_true", help="export FP32 and INT8 (QDQ) ONNX and time both in "
                   "onnxruntime (needs --w int8 --a int8 and the export extra)")
    q.add_argument("--seed", type=_seed, default=0, help="random seed of the synthetic calibration (default 0)")
    q.add_argument("--out", required=True, help="run directory")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_args(q)

    r = sub.add_parser("prune", help="class-aware pruning (CRISP: hybrid N:M + block sparsity), data-free by "
                       "default", description="Prune a trained model for the classes a user needs: class-aware "
                       "gradient saliency, N:M sparsity along input channels inside BxB blocks that are removed whole, "
                       "iterative fine-tuning (SR-STE) with KD from the dense model. The images are inverted from the "
                       "model for those classes unless --data gives real ones; --eval-data is only for reporting.")
    r.add_argument("--model", required=True, help=MODEL_HELP)
    r.add_argument("--weights", required=True, help="model weights (.safetensors or a torch state_dict)")
    r.add_argument("--classes", required=True, type=_ints,
                   help="the user's classes, comma-separated indices, e.g. 0,1,2")
    r.add_argument("--nm", default="2:4", help="N:M fine-grained sparsity along input channels (default 2:4)")
    r.add_argument("--block", type=_pos, default=16, help="block side B of the block sparsity (default 16)")
    r.add_argument("--block-sparsity", type=float, default=0.5,
                   help="final share of blocks removed in the block-pruned layers (default 0.5)")
    r.add_argument("--steps", type=_pos, default=5, help="block-sparsity increments (default 5)")
    r.add_argument("--iterations", type=_pos, default=100,
                   help="fine-tuning iterations per phase; phases = steps + 2 (default 100)")
    r.add_argument("--budget", help="wall-clock for the whole pruning instead of --iterations, e.g. 10m "
                   "(image synthesis and --eval-data evaluation not counted; no round budget)")
    r.add_argument("--saliency", choices=["crisp", "magnitude"], default="crisp",
                   help="crisp: class-aware |W x grad| (default); magnitude: |W|, class-agnostic ablation")
    r.add_argument("--lr", type=_positive_float, default=0.003,
                   help="fine-tuning learning rate, SGD + cosine (default 0.003)")
    r.add_argument("--samples-per-class", type=_pos, default=128, help="images per user class (default 128)")
    r.add_argument("--prune-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="any other CRISP option, repeatable: " + _defaults(CRISPConfig, (
                       "classes", "n", "m", "block", "block_sparsity", "steps", "iterations", "budget", "saliency",
                       "lr", "samples_per_class", "seed")) + ", skip=layer3.2.conv2,linear (layers left dense, by "
                       "module name)")
    r.add_argument("--data", default="synthetic",
                   help="'synthetic' (default: inverted from the model, no real data), real labelled data (npz / "
                        "folder: up to --samples-per-class images of each user class, every one of which must be "
                        "there), or a calib.safetensors an earlier run saved (unlabelled: the model's reading must "
                        "find every user class in it)")
    r.add_argument("--eval-data", help="held-out npz / folder / mnist5k:test, for reporting only")
    r.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run in --out after its last "
                   "finished phase (even after kill -9), with the images it saved")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_args(r)

    w = sub.add_parser("sweep", help="accuracy vs FPGA MAC cost over weight x activation formats x algorithms",
                       description="Quantize the model with every weight/activation format pair (3-8 bits, integer "
                       "and minifloat splits) and algorithm set, evaluate it, and plot accuracy against the LUTs of "
                       "one MAC (from the committed Yosys table); the first and last layers stay at 8 bits or more, as "
                       "quantize's default --edge-bits 8 keeps them. Writes sweep.csv, sweep.json (the points and "
                       "the FP32 accuracy), pareto.png, calib.safetensors, config.yaml and report.md in --out; a "
                       "rerun into it with more formats or algorithms adds their points.")
    w.add_argument("--model", required=True, help=MODEL_HELP)
    w.add_argument("--weights", required=True, help="model weights (.safetensors or a torch state_dict)")
    w.add_argument("--eval-data", required=True, help="held-out data for the accuracy axis")
    w.add_argument("--eval-samples", type=_pos, default=2000, help="held-out images per point (default 2000)")
    _calib_args(w)
    w.add_argument("--w-bits", type=_bits, default="3-8", help="weight bit widths, e.g. 3-8 or 4,8 (default 3-8)")
    w.add_argument("--a-bits", type=_bits, default="4,6,8", help="activation bit widths (default 4,6,8)")
    w.add_argument("--exps", type=_exps, default="2,3",
                   help="minifloat exponent widths to try (default 2,3; E4M3/E5M2 always at 8 bits)")
    w.add_argument("--all-splits", action="store_true", help="every minifloat split of every width")
    w.add_argument("--algo", default="rtn", help="algorithm sets separated by ';', each comma-separated, e.g. "
                   "'rtn;gptq,bias_correction' (default rtn)")
    w.add_argument("--out", required=True, help="run directory")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_args(w)

    c = sub.add_parser("condense", help="make a condensed set (Distribution Matching or Improved DM) from real "
                       "labelled data",
                       description="The data owner's side: distil --ipc images per class from a labelled set by "
                       "Distribution Matching (random ConvNet embeddings, DSA augmentation, initialised from real "
                       "images) or Improved Distribution Matching (--method idm: embeddings from a queue of ConvNets "
                       "being trained on the data, plus a class-aware cross-entropy term). Writes OUT/condensed.npz "
                       "(uint8 NHWC, labels, class names) and a grid PNG.")
    c.add_argument("--data", required=True, help="labelled npz / image folder / mnist5k")
    c.add_argument("--ipc", type=_pos, default=10, help="images per class (e.g. 1, 10, 50; default 10)")
    cg = c.add_mutually_exclusive_group()
    cg.add_argument("--budget", default="25m", help="wall-clock budget (default 25m); 500r: 500 iterations")
    cg.add_argument("--iterations", type=_pos, help="a number of iterations instead")
    c.add_argument("--batch-real", type=_pos, default=64, help="real images per class per iteration (default 64)")
    c.add_argument("--method", choices=("dm", "idm"), default="dm",
                   help="dm: Distribution Matching (Zhao & Bilen 2023, the default); idm: Improved DM (Zhao et al., "
                   "CVPR 2023), slower per iteration")
    c.add_argument("--lr", type=_positive_float, help="learning rate of the images (default: dm 1.0, idm 0.2)")
    c.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    c.add_argument("--out", required=True, help="run directory")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("models", help="list the model zoo", description="The zoo's architectures with the input shape "
                   "and class count each is built for (timm:NAME, torchvision:NAME and file.py:factory also work).")
    return ap


def _bits(s: str, lo: int = 3, what: str = "bit widths") -> tuple[int, ...]:
    """'3-8' or '4,6,8': bit widths between ``lo`` and 8 (the committed MAC table covers 3-8 bits)."""
    try:
        if "-" in s:
            first, last = s.split("-")
            bits = tuple(range(int(first), int(last) + 1))
        else:
            bits = tuple(int(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} such as 3-8 or 4,6,8, got '{s}'") from None
    if not bits or not all(lo <= b <= 8 for b in bits):
        raise argparse.ArgumentTypeError(f"expected {what} between {lo} and 8 such as 3-8 or 4,6,8, got '{s}'")
    return bits


def _exps(s: str) -> tuple[int, ...]:
    return _bits(s, 1, "exponent widths")
