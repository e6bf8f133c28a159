"""``datafree quantize`` and ``datafree sweep``: the calibration data, the evaluation, the run directory,
the ONNX export and the report around the quantizer (``datafree.quant.quantize``)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from datafree.config import dump_yaml, load_yaml, to_dict
from datafree.data.augment import normalize
from datafree.data.loaders import data_label, load_dataset, per_class_counts
from datafree.errors import DatafreeError
from datafree.evaluate import eval_tensors, evaluate
from datafree.machine import machine_info
from datafree.models import ModelMeta, as_model, check_model, meta_record, model_meta, sha256_file
from datafree.quant.graph import trace
from datafree.run import RunDir, config_difference
from datafree.types import Data, EvalData, Floats, PathLike, Shape

if TYPE_CHECKING:
    from datafree.quant import QuantConfig

# settings a sweep may change between sittings of one directory: they add points, not change the old ones
# (the paths may be spelt otherwise: the files are compared by content, as *_id)
SWEEP_GROWS = frozenset({"sweep.w_bits", "sweep.a_bits", "sweep.exps", "sweep.all_splits", "sweep.algorithms",
                         "sweep.calib_images", "sweep.weights", "sweep.calib", "sweep.eval_data"})


def _identity(ref, label: str | None = None) -> str | None:
    """What a sweep rerun compares an input by: a file's sha256 (a path spelt otherwise is the same file, a file
    replaced under the same path is not), else its label (a folder's path, 'synthetic', data in memory)."""
    if isinstance(ref, (str, os.PathLike)) and Path(ref).is_file():
        return "sha256:" + sha256_file(ref)
    return label if label is not None else data_label(ref)



@dataclasses.dataclass
class QuantResult:
    model: nn.Module  # the fake-quantized model (BN folded)
    report: dict
    run_dir: str | None = None


def calibration_data(calib: Data | torch.Tensor | None, model: nn.Module, meta: ModelMeta, n: int, seed: int,
                     progress: bool, label: str | None = None) -> tuple[torch.Tensor, str]:
    """(calibration images in the model input space, a sentence saying where they came from: ``label`` or
    ``calib``'s path)."""
    from datafree.quant.calib import synthetic_calibration

    if calib is None or (isinstance(calib, str) and calib == "synthetic"):
        x = synthetic_calibration(model, meta.input_shape, meta.num_classes, n, meta.mean, meta.std, seed=seed,
                                  progress=progress)
        return x, f"synthetic: {n} images inverted from the model (BN statistics, DeepInversion); no real image"
    if isinstance(calib, torch.Tensor):
        return calib[:n].float(), f"{min(n, len(calib))} images given by the caller"
    if isinstance(calib, (str, os.PathLike)) and str(calib).endswith(".safetensors"):
        return saved_calibration(calib, meta, n)
    ds = load_dataset(str(calib)) if isinstance(calib, (str, os.PathLike)) else calib
    if tuple(ds.x.shape[1:]) != tuple(meta.input_shape):
        raise DatafreeError(f"calibration images have shape {tuple(ds.x.shape[1:])} but the model takes "
                            f"{tuple(meta.input_shape)}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    x = normalize(ds.x[idx].float() / 255, meta.mean, meta.std)
    return x, f"real: {len(idx)} images from {label or data_label(calib)} ({per_class_counts(ds.y[idx])})"


def saved_calibration(path: PathLike, meta: ModelMeta, n: int) -> tuple[torch.Tensor, str]:
    """A calibration set a quantize / sweep run saved (``calib.safetensors``): reused as it was made."""
    from datafree.io.safetensors import load_safetensors, read_metadata

    if not Path(path).is_file():
        raise DatafreeError(f"calibration file {path} does not exist")
    x = load_safetensors(path).get("images")
    if x is None or tuple(x.shape[1:]) != tuple(meta.input_shape):
        got = None if x is None else tuple(x.shape[1:])
        raise DatafreeError(f"{path} holds no 'images' tensor of shape (N, {', '.join(map(str, meta.input_shape))})"
                            f" (found {got}); pass a calib.safetensors written by datafree quantize / sweep")
    desc = read_metadata(path).get("description", "saved calibration set")
    return x[:n].float(), f"{desc} (reused from {path}, {min(n, len(x))} images)"


def save_calibration(run: RunDir, x: torch.Tensor, desc: str) -> None:
    from datafree.io.safetensors import save_safetensors

    save_safetensors({"images": x.contiguous()}, run.file("calib.safetensors"), {"description": desc})


def quantize(model: nn.Module | str, config: QuantConfig | None = None, calib: Data | torch.Tensor | None = None, *,
             weights: str | None = None, num_classes: int | None = None, input_shape: Shape | None = None,
             mean: Floats | None = None, std: Floats | None = None, eval_data: EvalData | None = None,
             out: str | None = None, calib_samples: int = 512, onnx: bool = False, seed: int = 0,
             progress: bool = True, **options) -> QuantResult:
    """Post-training quantization of ``model`` with ``config`` (a ``QuantConfig``; ``options`` are its
    fields).  ``calib``: None / "synthetic" (default: images inverted from the model - data-free),
    a path (npz / folder / mnist5k), an ImageSet or a tensor in the input space.  ``eval_data`` is only
    used to report accuracy.  ``onnx=True`` also exports FP32 and INT8 ONNX models and times them."""
    from datafree.quant import QuantConfig
    from datafree.quant import quantize as run_quant

    cfg = config or QuantConfig(**options)
    if config is not None and options:
        cfg = dataclasses.replace(config, **options)
    cfg.check()  # a bad algorithm, option or format fails before minutes of calibration
    if onnx:
        if not out:  # the ONNX files go into the run directory
            raise DatafreeError("onnx=True writes the ONNX models into the run directory: give out=...")
        cfg.check_onnx()
    model = as_model(model, weights, num_classes).eval()
    meta = model_meta(model, input_shape, num_classes, mean, std)
    check_model(model, meta, "model")
    trace(model)  # a model torch.fx cannot trace fails here, not after minutes of synthetic calibration
    run = RunDir(out) if out else None
    if run:
        run.expect("quantize")
        if run.file("report.json").is_file():  # a rerun would replace its files one by one, or leave them mixed
            raise DatafreeError(f"'{run.path}' holds a finished quantize run; choose another --out (its "
                                "calib.safetensors can be reused there with --calib)")
    ex, ey = eval_tensors(eval_data, meta)  # bad held-out data fails before minutes of calibration
    t0 = time.time()
    x, calib_desc = calibration_data(calib, model, meta, calib_samples, seed, progress)
    t_calib = time.time() - t0
    if run:  # reusable with --calib run/calib.safetensors (synthesis of 512 images takes minutes on a CPU)
        save_calibration(run, x, calib_desc)
    qmodel, info = run_quant(model, cfg, x, progress)
    report = {"kind": "post-training quantization", "model": meta.name, "config": to_dict(cfg),
              "calibration": calib_desc, "calibration_data_s": round(t_calib, 1), **info,
              "eval_data": data_label(eval_data), "eval_images": len(ey) if ey is not None else None,
              "machine": machine_info()}
    if ex is not None:
        report["fp32_accuracy"] = evaluate(model, ex, ey)["accuracy"]
        report["accuracy"] = evaluate(qmodel, ex, ey)["accuracy"]
    try:
        from datafree.hw.cost import mac_cost

        report["mac"] = mac_cost(cfg.weights, cfg.activations) if cfg.activations else None
    except DatafreeError:
        report["mac"] = None
    if onnx and run:
        report["onnx"] = export_report(model, qmodel, meta, run, ex, progress)
    if run:
        from datafree.quant.graph import quant_layers
        from datafree.report import plot_series

        layers = [{"layer": m.name, "weight_rel_error": float((m.weight_q - m.weight).pow(2).sum()
                                                              / m.weight.pow(2).sum().clamp_min(1e-12))}
                  for m in quant_layers(qmodel)]
        report["weight_rel_error"] = layers
        run.reset_metrics()  # one row per step of the recipe, then one per layer
        for name, step in info["steps"].items():
            run.log_metrics({"step": name, **{k: v for k, v in step.items() if isinstance(v, (int, float, str))}})
        for row in layers:
            run.log_metrics(row)
        plot_series(layers, "layer", ["weight_rel_error"], run.file("weight_error.png"),
                    "relative squared error of the quantized weights", log_y=True, bars=True)
        run.write_config({"quantize": to_dict(cfg), "model": meta.name, "weights": weights,
                          "calib": data_label(calib) or "synthetic", "calib_samples": calib_samples,
                          "calib_images": len(x), "seed": seed, "onnx": onnx, "calibration": calib_desc,
                          "eval_data": report["eval_data"]})
        from datafree.quant.checkpoint import save_quantized

        save_quantized(qmodel, cfg, run.file("quantized.safetensors"), {
            **meta_record(meta), "format": "quantized, BN folded: bit-packed weight codes and scales, with every "
            "quantizer's parameters; datafree evaluate reads it, or datafree.quant.load_quantized",
            "weights": cfg.weights, "activations": str(cfg.activations)})
        from datafree.report import write_quant_report

        write_quant_report(run, report)
    return QuantResult(qmodel, report, str(run.path) if run else None)


def export_report(model: nn.Module, qmodel: nn.Module, meta: ModelMeta, run: RunDir, ex: torch.Tensor | None,
                  progress: bool = True) -> dict:
    """FP32 and INT8 ONNX in the run dir, their agreement with the PyTorch models and their latency."""
    from datafree.export import compare_latency, export_onnx, run_onnx

    fp32 = export_onnx(model, run.file("model_fp32.onnx"), meta.input_shape)
    int8 = export_onnx(qmodel, run.file("model_int8.onnx"), meta.input_shape, int8=True)
    out = {"fp32": str(fp32.name), "int8": str(int8.name)}
    if ex is not None:
        xs = ex[:1000]
        with torch.no_grad():
            ref = qmodel(xs)
        got = run_onnx(int8, xs)
        out["int8_vs_fake_quant"] = {"max_abs_logit_diff": float((got - ref).abs().max()),
                                     "mean_abs_logit_diff": float((got - ref).abs().mean()),
                                     "mean_abs_logit": float(ref.abs().mean()),
                                     "top1_agreement": float((got.argmax(1) == ref.argmax(1)).float().mean()),
                                     "images": len(xs)}
    lat = compare_latency({"fp32": fp32, "int8": int8}, meta.input_shape, batch=64)
    out["latency_fp32"], out["latency_int8"] = lat["fp32"], lat["int8"]
    out["speedup_batch64"] = out["latency_fp32"]["median_ms"] / out["latency_int8"]["median_ms"]
    return out


def sweep(model: nn.Module | str, *, weights: str | None = None, eval_data: EvalData | None = None,
          calib: Data | torch.Tensor | None = None, w_bits: Sequence[int] = (3, 4, 5, 6, 7, 8),
          a_bits: Sequence[int] = (4, 6, 8), exps: tuple[int, ...] = (2, 3), all_splits: bool = False,
          algorithms: list[list[str]] | None = None, eval_samples: int = 2000, calib_samples: int = 512,
          out: str = "runs/sweep", num_classes: int | None = None, input_shape: Shape | None = None,
          mean: Floats | None = None, std: Floats | None = None, seed: int = 0, progress: bool = True) -> list[dict]:
    """Accuracy vs synthesized MAC cost over weight x activation formats x algorithms; writes
    ``out``/sweep.csv (Pareto points flagged) and ``out``/pareto.png.  ``eval_data`` is required (the
    accuracy axis); only its first ``eval_samples`` images (class-interleaved in ../shared) are used."""
    from datafree.quant.formats import format_splits
    from datafree.quant.sweep import default_formats, plot_pareto
    from datafree.quant.sweep import sweep as run_sweep

    if eval_data is None:
        raise DatafreeError("the sweep needs --eval-data: accuracy is one of its two axes")
    from datafree.quant import QuantConfig

    for group in algorithms or [[]]:  # unknown algorithms fail before calibration, not after the first points
        QuantConfig(algorithms=list(group)).resolved_algorithms()
    model = as_model(model, weights, num_classes).eval()
    meta = model_meta(model, input_shape, num_classes, mean, std)
    check_model(model, meta, "model")
    trace(model)  # as in quantize: an untraceable model fails before calibration
    run = RunDir(out)
    run.expect("sweep")  # another command's run directory is refused before anything is computed or written
    algos = [("+".join(a) or "rtn") for a in (algorithms or [[]])]
    calib_label = data_label(calib) or "synthetic"
    cfg = {"sweep": {"model": meta.name, "weights": weights, "weights_id": _identity(weights),
                     "input_shape": list(meta.input_shape), "num_classes": meta.num_classes,
                     "mean": meta.mean, "std": meta.std,
                     "calib": calib_label, "calib_id": _identity(calib, calib_label), "calib_samples": calib_samples,
                     "seed": seed, "eval_data": data_label(eval_data), "eval_data_id": _identity(eval_data),
                     "eval_samples": eval_samples, "w_bits": list(w_bits), "a_bits": list(a_bits),
                     "exps": list(exps), "all_splits": all_splits, "algorithms": algos}}
    old = run.read_config()
    again = run.file("sweep.csv").is_file()
    if again:  # the points of sweep.csv are reused: same model, calibration and evaluation (more formats or
        # algorithms only add points)
        lacks = sorted(set(cfg["sweep"]) - set((old or {}).get("sweep") or {}))
        if old is None or "sweep" not in old or lacks:
            why = ("without the config.yaml it was made with" if old is None or "sweep" not in old else
                   f"whose config.yaml an earlier datafree wrote (it lacks {', '.join(lacks[:3])})")
            raise DatafreeError(f"'{run.path}' holds a sweep.csv {why}, so its points cannot be checked against "
                                "these settings: choose another --out")
        diff = config_difference(old, load_yaml(dump_yaml(cfg)), SWEEP_GROWS)
        if diff:
            raise DatafreeError(f"'{run.path}' holds a sweep made with other settings ({diff}); its points would "
                                "not be comparable: choose another --out")
        for key in ("w_bits", "a_bits", "exps", "algorithms"):  # the config describes every point sweep.csv holds
            cfg["sweep"][key] = sorted(set(old["sweep"].get(key) or []) | set(cfg["sweep"][key]), key=str)
        cfg["sweep"]["all_splits"] = bool(old["sweep"].get("all_splits")) or all_splits
    ex, ey = eval_tensors(eval_data, meta)  # bad held-out data fails before minutes of calibration
    ex, ey = ex[:eval_samples], ey[:eval_samples]
    if again and run.file("calib.safetensors").is_file():  # the very images the old points were calibrated on
        x, desc = saved_calibration(run.file("calib.safetensors"), meta, calib_samples)
        desc = desc.split(" (reused from")[0]
    else:
        x, desc = calibration_data(calib, model, meta, calib_samples, seed, progress)
        save_calibration(run, x, desc)
    run.write_config({"sweep": {**cfg["sweep"], "calib_images": len(x)}})

    def fmts(bits):
        return [f for b in bits for f in format_splits(b)] if all_splits else default_formats(list(bits), exps)

    rows = run_sweep(model, x, ex, ey, fmts(w_bits), fmts(a_bits), algorithms or [[]], run.file("sweep.csv"),
                     progress=progress)
    plot_pareto(rows, run.file("pareto.png"), f"{meta.name}: accuracy ({len(ex)} held-out images) vs MAC cost")
    fp32 = evaluate(model, ex, ey)["accuracy"]  # the baseline every point's drop is read against
    run.save_json("sweep.json", {"model": meta.name, "calibration": desc, "eval_samples": len(ex),
                                 "fp32_accuracy": fp32, "rows": rows,
                                 "w_bits": cfg["sweep"]["w_bits"], "a_bits": cfg["sweep"]["a_bits"],
                                 "points": len(rows), "algorithms": cfg["sweep"]["algorithms"],
                                 "machine": machine_info()})
    front = sorted((r for r in rows if str(r.get("pareto")) == "True"), key=lambda r: float(r["luts"]))
    from datafree.report import write_markdown

    write_markdown(run, f"datafree sweep: {meta.name}", [
        f"calibration data: **{desc}**",
        f"held-out data (the accuracy axis): {data_label(eval_data)}, its first {len(ex):,} images; the FP32 model "
        f"scores **{100 * fp32:.2f} %** on them",
        f"{len(rows)} points: weights x activations x algorithms ({', '.join(cfg['sweep']['algorithms'])}); "
        "cost: LUTs of one MAC of the format pair (Yosys, datafree/hw/mac_costs.csv); all points in sweep.csv",
        "every point keeps the first and last layers at 8 bits or more (quantize's default --edge-bits 8, widened in "
        "the same family), as deployments do; the cost is the MAC of the other layers",
        "Pareto front (no point both cheaper and more accurate): " + "; ".join(
            f"W {r['weights']} / A {r['activations']} {r['algorithms']}: {100 * float(r['accuracy']):.2f} % at "
            f"{float(r['luts']):.0f} LUTs" for r in front)], ["pareto.png"])
    return rows
