"""What each ``datafree`` sub-command does with its parsed arguments: call the API function it mirrors
(``datafree.api``) and print one line saying what was done and where."""

from __future__ import annotations

import argparse
import json

from datafree.errors import DatafreeError


def distill(a: argparse.Namespace) -> None:
    from datafree.api import distill

    given = {"batch_size": a.batch_size, "kd_steps": a.kd_steps, "synth_every": a.synth_every, "lr": a.lr,
             "temperature": a.temperature, "loss": a.loss, "ema": a.ema}
    opts = {k: v for k, v in given.items() if v is not None}
    if a.novel_window:
        opts["novel_window"] = a.novel_window
    if a.no_bf16 and a.bf16 == "on":
        raise DatafreeError("--bf16 on and --no-bf16 disagree: give one")
    for flag, key in ((a.no_bf16, "bf16"), (a.no_flip, "flip"), (a.no_teacher_cache, "cache_teacher")):
        if flag:
            opts[key] = False
    if a.bf16 != "auto" and not a.no_bf16:
        opts["bf16"] = a.bf16 == "on"
    guide_opts = dict(a.guide_opt)  # without --guide any of them is refused by the API, not dropped
    if a.guide_mode and guide_opts.setdefault("mode", a.guide_mode) != a.guide_mode:
        raise DatafreeError(f"--guide-mode {a.guide_mode} and --guide-opt mode={guide_opts['mode']} disagree: "
                            "give one")
    if a.guide:
        guide_opts.setdefault("mode", "guided")
    res = distill(a.teacher, a.student, a.input_shape, a.num_classes, None if a.rounds else a.budget, a.rounds,
                  a.seed, teacher_weights=a.teacher_weights, mean=a.mean, std=a.std, eval_data=a.eval_data,
                  out=a.out, resume=a.resume, synthesizer=a.synthesizer, synth=dict(a.synth_opt),
                  replay=a.replay, replay_opts=dict(a.replay_opt), guide=a.guide,
                  guide_opts=guide_opts,
                  progress=not a.quiet, channels_last=not a.no_channels_last, deterministic=a.deterministic, **opts)
    s = res.summary
    acc = ""
    if "last_accuracy_fp32" in s:
        last = s.get("last_accuracy")
        acc = f", last accuracy {s['last_accuracy_fp32']:.4f} re-evaluated in float32" + (
            f" ({last:.4f} in the run's last evaluation, report.md's 'last')" if last is not None and
            round(last, 4) != round(s["last_accuracy_fp32"], 4) else "") + (
            f", mean over the run {s['mean_accuracy']:.4f}" if "mean_accuracy" in s else "")
    print(f"done: {s['rounds']} rounds in {s['elapsed_s']:.0f} s{acc}; run directory {a.out}")


def train(a: argparse.Namespace) -> None:
    from datafree.api import train

    r = train(a.model, a.data, epochs=a.epochs, out=a.out, eval_data=a.eval_data, num_classes=a.num_classes,
              input_shape=a.input_shape, mean=a.mean, std=a.std, progress=not a.quiet, lr=a.lr,
              batch_size=a.batch_size, seed=a.seed, flip=not a.no_flip)
    acc = f", held-out accuracy {r['accuracy']:.4f}" if r["accuracy"] is not None else ""
    print(f"done: train accuracy {r['train_accuracy']:.4f}{acc}; weights {a.out}/model.safetensors")


def evaluate(a: argparse.Namespace) -> None:
    from datafree.api import evaluate_dataset

    r = evaluate_dataset(a.model, a.data, weights=a.weights, num_classes=a.num_classes, input_shape=a.input_shape,
                         mean=a.mean, std=a.std)
    print(json.dumps(r) if a.json else f"accuracy {r['accuracy']:.4f} on {r['n']} images (loss {r['loss']:.4f})")


def export(a: argparse.Namespace) -> None:
    from datafree.api import export_model

    r = export_model(a.model, a.out, weights=a.weights, num_classes=a.num_classes, input_shape=a.input_shape,
                     mean=a.mean, std=a.std, eval_data=a.eval_data, batch=a.batch)
    if a.json:
        print(json.dumps(r))
        return
    v, lat = r["vs_pytorch"], r["latency"]
    acc = f"; accuracy {r['accuracy']:.4f} on {r['eval_images']} images (onnxruntime)" if "accuracy" in r else ""
    print(f"wrote {r['onnx']} ({r['format']}, {r['bytes'] / 1e6:.3f} MB); vs PyTorch on {v['images']} {v['inputs']} "
          f"inputs: top-1 agreement {v['top1_agreement']:.4f}, max |logit diff| {v['max_abs_logit_diff']:.2g}{acc}; "
          f"latency {lat['median_ms']:.2f} ms per batch of {lat['batch']}")


def quantize(a: argparse.Namespace) -> None:
    from datafree.api import quantize
    from datafree.quant import QuantConfig

    options: dict = {}
    for key, value in a.algo_opt:
        algo, _, opt = key.partition(".")
        if not opt:
            raise DatafreeError(f"--algo-opt expects ALGO.KEY=VALUE, got '{key}'")
        options.setdefault(algo, {})[opt] = value
    if a.group_size is not None and a.granularity != "group":  # it would be ignored
        raise DatafreeError(f"--group-size applies to --granularity group, not {a.granularity}: add --granularity "
                            "group or drop --group-size")
    cfg = QuantConfig(weights=a.w, activations=None if a.a.lower() == "none" else a.a, w_granularity=a.granularity,
                      group_size=a.group_size or QuantConfig.group_size, w_observer=a.observer, a_observer=a.observer,
                      scale_type=a.scale_type,
                      algorithms=[s for s in a.algo.split(",") if s.strip()], options=options,
                      edge_bits=a.edge_bits or None, quantize_residuals=a.quantize_residuals or a.onnx)
    r = quantize(a.model, cfg, a.calib, weights=a.weights, num_classes=a.num_classes, input_shape=a.input_shape,
                 mean=a.mean, std=a.std, eval_data=a.eval_data, out=a.out, calib_samples=a.calib_samples,
                 onnx=a.onnx, seed=a.seed, progress=not a.quiet).report
    acc = ""
    if r.get("accuracy") is not None:
        acc = f", accuracy {r['accuracy']:.4f} (FP32 {r['fp32_accuracy']:.4f})"
    sz = r["size"]
    sparse = (f" ({sz['sparse_compression']:.1f}x in its sparse pattern)"
              if sz.get("sparse_bytes", sz["quantized_bytes"]) < sz["quantized_bytes"] else "")
    print(f"done: {cfg.weights} weights / {cfg.activations or 'float'} activations{acc}; "
          f"{sz['compression']:.1f}x smaller{sparse}; run directory {a.out}")


def prune(a: argparse.Namespace) -> None:
    from datafree.api import prune

    n, _, m = a.nm.partition(":")
    if not (n.isdigit() and m.isdigit()):
        raise DatafreeError(f"--nm must look like 2:4, got '{a.nm}'")
    opts = {"n": int(n), "m": int(m), "block": a.block, "block_sparsity": a.block_sparsity, "steps": a.steps,
            "iterations": a.iterations, "budget": a.budget, "saliency": a.saliency, "lr": a.lr,
            "samples_per_class": a.samples_per_class}
    flagged = [k for k in dict(a.prune_opt) if k in opts or k in ("classes", "seed")]
    if flagged:  # it would silently override (or be overridden by) the flag
        flag = {"n": "--nm", "m": "--nm"}.get(flagged[0], "--" + flagged[0].replace("_", "-"))
        raise DatafreeError(f"--prune-opt {flagged[0]}=... is set by {flag}: give it there")
    opts.update(dict(a.prune_opt))
    res = prune(a.model, classes=a.classes, weights=a.weights, data=a.data, eval_data=a.eval_data, out=a.out,
                num_classes=a.num_classes, input_shape=a.input_shape, mean=a.mean, std=a.std, seed=a.seed,
                progress=not a.quiet, resume=a.resume, **opts)
    r = res.report
    acc = ""
    if "accuracy" in r["pruned"]:
        acc = f", user-class accuracy {r['pruned']['accuracy']:.4f} (dense {r['dense']['accuracy']:.4f})"
    print(f"done: {100 * r['sparsity']['sparsity']:.1f} % of the weights zero, {r['macs']['mac_reduction']:.2f}x fewer "
          f"non-zero MACs{acc}; run directory {a.out}")


def sweep(a: argparse.Namespace) -> None:
    from datafree.api import sweep

    algos: list[list[str]] = []
    for group in a.algo.split(";"):  # each set once ("rtn;rtn" is one set)
        s = [x.strip() for x in group.split(",") if x.strip() and x.strip() != "rtn"]
        if s not in algos:
            algos.append(s)
    rows = sweep(a.model, weights=a.weights, eval_data=a.eval_data, calib=a.calib, w_bits=a.w_bits,
                 a_bits=a.a_bits, exps=a.exps, all_splits=a.all_splits, algorithms=algos,
                 eval_samples=a.eval_samples, calib_samples=a.calib_samples, out=a.out, num_classes=a.num_classes,
                 input_shape=a.input_shape, mean=a.mean, std=a.std, progress=not a.quiet)
    front = sum(str(r["pareto"]) == "True" for r in rows)
    print(f"done: {len(rows)} points, {front} on the Pareto front; {a.out}/sweep.csv, {a.out}/pareto.png")


def condense(a: argparse.Namespace) -> None:
    from datafree.api import condense

    opts = {"lr": a.lr} if a.lr is not None else {}  # else the method's own default
    r = condense(a.data, ipc=a.ipc, budget=None if a.iterations else a.budget, iterations=a.iterations, out=a.out,
                 seed=a.seed, method=a.method, progress=not a.quiet, batch_real=a.batch_real, **opts)
    print(f"done: {r['images']} images ({a.ipc} per class) after {r['iterations']} iterations in {r['wall_s']:.0f} s; "
          f"{r['npz']}")
