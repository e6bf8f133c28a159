"""The ``datafree`` command line.  Each sub-command mirrors one API function (see api.py)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from datafree.errors import DatafreeError

EPILOG = "Models: run `datafree models`. Budgets: 90s, 15m, 1h30m (method wall-clock) or --rounds N."


def _shape(s: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in s.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 3,32,32 (got '{s}')") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"input shape must be C,H,W (got '{s}')")
    return shape


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(v) for v in s.split(","))


def _kv(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{s}'")
    k, v = s.split("=", 1)
    try:
        return k.replace("-", "_"), json.loads(v)
    except json.JSONDecodeError:
        return k.replace("-", "_"), v


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=_shape, help="C,H,W; only for models outside the zoo")
    p.add_argument("--num-classes", type=int, help="class count; only for models outside the zoo")
    p.add_argument("--mean", type=_floats, help="per-channel input mean, e.g. 0.49,0.48,0.45 (zoo models know it)")
    p.add_argument("--std", type=_floats, help="per-channel input std (zoo models know it)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="datafree", description="Compress a trained image classifier without its "
                                 "training data.", epilog=EPILOG)
    ap.add_argument("--version", action="version", version="datafree 0.1.0")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = sub.add_parser("distill", help="data-free distillation of a teacher into a student",
                       description="Invert the teacher into synthetic images and distill the student on them. "
                       "No training image is used; --eval-data is only for reporting.", epilog=EPILOG)
    d.add_argument("--teacher", required=True, help="zoo name or path/to/file.py:factory")
    d.add_argument("--teacher-weights", help="teacher weights (.safetensors or a torch state_dict file)")
    d.add_argument("--student", required=True, help="zoo name or path/to/file.py:factory")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--budget", default="10m", help="method wall-clock budget (default 10m)")
    g.add_argument("--rounds", type=int, help="budget in rounds instead of wall-clock (reproducible)")
    d.add_argument("--eval-data", help="held-out npz / image folder / mnist5k:test, for reporting only")
    d.add_argument("--out", required=True, help="run directory (created; must be writable)")
    d.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--synthesizer", default="generator", choices=["generator", "pixel"],
                   help="generator: Fast-DFKD generator inversion (default); pixel: DeepInversion")
    d.add_argument("--synth-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="synthesizer option, repeatable (e.g. g_steps=5, bn=10, adv=1.1, batch_size=256)")
    d.add_argument("--replay", default="memory-bank", choices=["none", "memory-bank", "vae"],
                   help="what the student rehearses besides the newest samples: memory-bank (MB-DFKD, default), "
                   "vae (PRE-DFKD generative pseudo replay, stores no sample) or none")
    d.add_argument("--replay-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="replay option, repeatable. memory-bank: capacity=N (samples), capacity_bytes=40MB, "
                   "policy=reservoir|fifo, ratio=0.5, add_every=1, add_fraction=1.0; vae: ratio=0.5, lr=5e-4, "
                   "schedule=constant|cosine, steps=1, latent=64, width=16, logit=1.0, kl=1e-4, "
                   "self_replay=0.25, block=128, nudge_steps=1")
    d.add_argument("--novel-window", type=int, help="the newest synthetic samples the student draws its "
                   "non-replay share from (default: as many as one round synthesizes)")
    d.add_argument("--batch-size", type=int, help="student batch size (default 256)")
    d.add_argument("--kd-steps", type=int, help="student steps per round (default 100)")
    d.add_argument("--synth-every", type=int, help="student steps per synthesis call (default 10)")
    d.add_argument("--lr", type=float, help="student SGD learning rate, cosine-decayed (default 0.05)")
    d.add_argument("--temperature", type=float, help="KD temperature (default 20)")
    d.add_argument("--loss", choices=["kl", "l1"], help="KD loss: KL with temperature (default) or L1 on logits")
    d.add_argument("--no-flip", action="store_true", help="no mirror augmentation (digits, text)")
    d.add_argument("--no-teacher-cache", action="store_true",
                   help="run the teacher on every augmented batch (random crop + flip) instead of caching its "
                   "logits per sample and its mirror")
    d.add_argument("--no-bf16", action="store_true", help="run everything in float32")
    d.add_argument("--no-channels-last", action="store_true", help="keep the default NCHW memory format")
    d.add_argument("--deterministic", action="store_true", help="deterministic algorithms (for exact resume)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_args(d)

    t = sub.add_parser("train", help="supervised training on real labelled data (teachers, baselines)")
    t.add_argument("--model", required=True, help="zoo name or path/to/file.py:factory")
    t.add_argument("--data", required=True, help="npz (x uint8 NHWC, y), image folder, or mnist5k")
    t.add_argument("--eval-data", help="held-out data for the final accuracy")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--quiet", action="store_true")
    _model_args(t)

    e = sub.add_parser("evaluate", help="accuracy of a model on labelled data")
    e.add_argument("--model", required=True)
    e.add_argument("--weights", required=True)
    e.add_argument("--data", required=True, help="npz, image folder, mnist5k:test")
    e.add_argument("--json", action="store_true", help="print JSON")
    _model_args(e)

    m = sub.add_parser("demo", help="the embedded MNIST-5k demo: teacher LeNet-5 -> data-free LeNet-5-half")
    m.add_argument("--out", default="runs/demo")
    m.add_argument("--budget", default="240s", help="data-free distillation budget (default 240s)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true")

    sub.add_parser("models", help="list the model zoo")
    return ap


def _distill(a: argparse.Namespace) -> None:
    from datafree.api import distill

    opts = {k: v for k, v in {"batch_size": a.batch_size, "kd_steps": a.kd_steps, "synth_every": a.synth_every,
                              "lr": a.lr, "temperature": a.temperature, "loss": a.loss}.items() if v is not None}
    if a.novel_window:
        opts["novel_window"] = a.novel_window
    for flag, key in ((a.no_bf16, "bf16"), (a.no_flip, "flip"), (a.no_teacher_cache, "cache_teacher")):
        if flag:
            opts[key] = False
    res = distill(a.teacher, a.student, a.input_shape, a.num_classes, None if a.rounds else a.budget, a.rounds,
                  a.seed, teacher_weights=a.teacher_weights, mean=a.mean, std=a.std, eval_data=a.eval_data,
                  out=a.out, resume=a.resume, synthesizer=a.synthesizer, synth=dict(a.synth_opt),
                  replay=a.replay, replay_opts=dict(a.replay_opt),
                  progress=not a.quiet, channels_last=not a.no_channels_last, deterministic=a.deterministic, **opts)
    s = res.summary
    acc = ""
    if "last_accuracy_fp32" in s:
        acc = f", last accuracy {s['last_accuracy_fp32']:.4f}, mean over the run {s['mean_accuracy']:.4f}"
    print(f"done: {s['rounds']} rounds in {s['elapsed_s']:.0f} s{acc}; run directory {a.out}")


def _train(a: argparse.Namespace) -> None:
    from datafree.api import train

    r = train(a.model, a.data, epochs=a.epochs, out=a.out, eval_data=a.eval_data, num_classes=a.num_classes,
              input_shape=a.input_shape, mean=a.mean, std=a.std, progress=not a.quiet, lr=a.lr,
              batch_size=a.batch_size, seed=a.seed, flip=not a.no_flip)
    acc = f", held-out accuracy {r['accuracy']:.4f}" if r["accuracy"] is not None else ""
    print(f"done: train accuracy {r['train_accuracy']:.4f}{acc}; weights {a.out}/model.safetensors")


def _evaluate(a: argparse.Namespace) -> None:
    from datafree.api import evaluate_dataset

    r = evaluate_dataset(a.model, a.data, weights=a.weights, num_classes=a.num_classes, input_shape=a.input_shape,
                         mean=a.mean, std=a.std)
    print(json.dumps(r) if a.json else f"accuracy {r['accuracy']:.4f} on {r['n']} images (loss {r['loss']:.4f})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("once")
    try:
        if args.cmd == "distill":
            _distill(args)
        elif args.cmd == "train":
            _train(args)
        elif args.cmd == "evaluate":
            _evaluate(args)
        elif args.cmd == "demo":
            from datafree.demo import run_demo

            run_demo(args.out, budget=args.budget, seed=args.seed, progress=not args.quiet)
        elif args.cmd == "models":
            from datafree.models import MODELS

            for name, spec in sorted(MODELS.items()):
                print(f"{name:20s} input {spec.input_shape}  classes {spec.num_classes}")
    except DatafreeError as e:
        print(f"datafree: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions, ... : one line, no traceback
        print(f"datafree: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("datafree: interrupted; the last checkpoint is intact (rerun with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
