"""The Python API.  Every CLI command is a thin shell around one function here."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from datafree.config import checked_options, to_dict
from datafree.data.augment import normalize
from datafree.data.loaders import ImageSet, data_label, load_dataset, per_class_counts
from datafree.distill.engine import DistillConfig, Distiller, DistillResult, method_configs
from datafree.distill.supervised import TrainConfig, train_supervised
from datafree.errors import DatafreeError
from datafree.evaluate import evaluate
from datafree.models import ModelMeta, create_model, load_weights, model_meta
from datafree.precision import BF16_FLAGS, bf16_fast, cpu_info
from datafree.prune.pipeline import PruneResult, prune  # noqa: F401  (the API of `datafree prune`)
from datafree.report import write_report
from datafree.run import RunDir
from datafree.synthesis.base import fused_bn_used

# what a resumed distillation may change: how long it runs, what it reports on, and speed settings
RESUME_FREE = frozenset({"distill.budget", "distill.rounds", "distill.bf16", "distill.channels_last",
                         "distill.deterministic", "eval_data"})


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def check_model(model: nn.Module, meta: ModelMeta, role: str) -> None:
    """Run one dummy batch: wrong input shape or class count fail here with one clear line."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *meta.input_shape))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:160]
        raise DatafreeError(f"the {role} cannot run on inputs of shape {tuple(meta.input_shape)} ({first}); "
                            "pass the right --input-shape") from None
    finally:
        model.train(was)
    if out.ndim != 2 or out.shape[1] != meta.num_classes:
        raise DatafreeError(f"class-count mismatch: the {role} outputs {tuple(out.shape[1:])} values per image "
                            f"but {meta.num_classes} classes are expected")


def as_model(model: nn.Module | str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    m = create_model(model, num_classes) if isinstance(model, str) else model
    if weights:
        load_weights(m, weights)
    return m


def _eval_tensors(data, meta: ModelMeta) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """Held-out data -> (x in the model input space, y); accepts a path, an ImageSet or (x, y)."""
    if data is None:
        return None, None
    if isinstance(data, (str, os.PathLike)):
        data = load_dataset(str(data))
    if isinstance(data, ImageSet):
        if tuple(data.x.shape[1:]) != tuple(meta.input_shape):
            raise DatafreeError(f"held-out images have shape {tuple(data.x.shape[1:])} but the models take "
                                f"{tuple(meta.input_shape)}")
        return normalize(data.float(), meta.mean, meta.std), data.y
    x, y = data
    return x.float(), y


def evaluate_dataset(model: nn.Module | str, data, *, weights: str | None = None, num_classes: int | None = None,
                     input_shape=None, mean=None, std=None) -> dict:
    """Accuracy of ``model`` on labelled data given as a path (npz / folder / mnist5k:test) or ImageSet;
    pixels are normalised with the model's recorded mean/std (or the ones passed)."""
    model = as_model(model, weights, num_classes)
    ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
    zoo = getattr(model, "datafree_meta", None)  # a zoo model knows its input shape; the data must fit it
    meta = model_meta(model, input_shape or (None if zoo else tuple(ds.x.shape[1:])), num_classes, mean, std)
    if tuple(ds.x.shape[1:]) != tuple(meta.input_shape):
        raise DatafreeError(f"the data's images have shape {tuple(ds.x.shape[1:])} but the model takes "
                            f"{tuple(meta.input_shape)}")
    x, y = _eval_tensors(ds, meta)
    res = evaluate(model, x, y)
    if not math.isfinite(res["loss"]):
        raise DatafreeError("the model's outputs are NaN or infinite on this data: check the weights and the "
                            "input normalisation (--mean/--std)")
    return res


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name, its native bf16 instructions (AVX512-BF16 / AMX) and whether the engine runs
    bf16 autocast on it (``bf16_autocast``, datafree.precision): with the native instructions the engine's
    work runs about twice as fast (reference speed 858 vs 318-417 images/s on two 2-core VMs of this
    workplace), and an AVX2-only CPU runs float32, so wall-clock results of such machines are not comparable."""
    info = cpu_info(cpuinfo)
    native = (sorted(info["flags"] & BF16_FLAGS) or False) if info["known"] else None  # None: not Linux
    return {"cpu_model": info["model"] or "unknown", "cpu_bf16": native, "bf16_autocast": bf16_fast(info)}


def machine_info() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            **cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "fused_bn_stats": fused_bn_used()}


def distill(teacher: nn.Module | str, student: nn.Module | str, input_shape=None, num_classes: int | None = None,
            budget: str | None = "10m", rounds: int | None = None, seed: int = 0, *, teacher_weights: str | None = None,
            mean=None, std=None, eval_data=None, out: str | None = None, resume: bool = False,
            synthesizer: str = "generator", synth: dict | None = None, replay: str = "memory-bank",
            replay_opts: dict | None = None, guide=None, guide_opts: dict | None = None, progress: bool = True,
            **options) -> DistillResult:
    """Data-free KD: invert ``teacher`` into synthetic images and train ``student`` on them.

    ``synth`` holds options of the synthesizer's config (``GeneratorConfig``, ``PixelConfig``), ``replay``
    picks the replay strategy (none | memory-bank | vae) and ``replay_opts`` its config's options
    (``MemoryBankConfig``, ``VAEReplayConfig``).  ``guide`` (npz path or ImageSet: a condensed set or k real
    images per class) steers the inversion (``guide_opts``: ``GuideConfig``, mode guided | mix); with
    ``synthesizer="none"`` the student learns from the guide samples alone.
    ``options`` are fields of ``DistillConfig`` (batch_size, kd_steps, lr, temperature, ...).
    ``eval_data`` (npz path, ImageSet or (x, y) in the input space) is for reporting only.
    """
    torch.manual_seed(seed)  # zoo students are initialised under the run's seed
    teacher = as_model(teacher, teacher_weights, num_classes)
    meta = model_meta(teacher, input_shape, num_classes, mean, std)
    student = as_model(student, None, meta.num_classes)
    smeta = getattr(student, "datafree_meta", None)
    if smeta and tuple(smeta.input_shape) != tuple(meta.input_shape):
        raise DatafreeError(f"student '{smeta.name}' takes {smeta.input_shape} inputs but the teacher takes "
                            f"{meta.input_shape}")
    check_model(teacher, meta, "teacher")
    check_model(student, meta, "student")
    fields = {f.name for f in dataclasses.fields(DistillConfig)}
    bad = [k for k in options if k not in fields]
    if bad:
        raise DatafreeError(f"unknown distill option '{bad[0]}'; options: {', '.join(sorted(fields))}")
    cfg = _distill_cfg(synthesizer, synth, replay, replay_opts, guide, guide_opts,
                       dict(budget=budget, rounds=rounds, seed=seed, **options))
    run = RunDir(out) if out else None
    ex, ey = _eval_tensors(eval_data, meta)
    engine = Distiller(teacher, student, meta, cfg, run, ex, ey, progress,
                       guide_data=guide if guide is not None and cfg.guide is None else None)
    teacher_eval = evaluate(teacher, ex, ey, bf16=False) if ex is not None else None
    t0 = time.time()
    if run and resume and not run.has_checkpoint():
        warnings.warn(f"--resume: '{run.path}' holds no checkpoint, so this run starts afresh", stacklevel=2)
    if run:  # budget, rounds, held-out data and speed settings may change on resume, nothing else
        run.claim({**engine.resolved_config(),
                   "teacher": {"arch": meta.name, "weights": teacher_weights, "input_shape": list(meta.input_shape),
                               "num_classes": meta.num_classes, "mean": meta.mean, "std": meta.std},
                   "student": {"arch": getattr(smeta, "name", "custom")},
                   "eval_data": str(eval_data) if isinstance(eval_data, (str, os.PathLike)) else None},
                  resume, RESUME_FREE)
    res = engine.run_loop(resume=resume)
    if not res.history:
        warnings.warn("the budget ended during the warm-up, before the student's first round: it is untrained; "
                      "give a longer --budget", stacklevel=2)
    final = evaluate(res.student, ex, ey) if ex is not None else None  # fp32, the number we report as last
    if final is not None:
        res.summary["last_accuracy_fp32"] = final["accuracy"]
    if run:
        student_meta = {"arch": getattr(smeta, "name", "custom"), "num_classes": str(meta.num_classes),
                        "mean": str(meta.mean), "std": str(meta.std), "input_shape": str(meta.input_shape)}
        run.save_weights(res.student, "student.safetensors", student_meta)
        report = {
            "kind": "data-free distillation" if engine.guide is None else "distillation with guide samples",
            "data_used": _data_used(engine),
            "eval_data": data_label(eval_data), "budget": str(engine.budget),
            "elapsed_s": res.summary["elapsed_s"], "wall_s": time.time() - t0, "machine": machine_info(),
            "teacher": {"arch": meta.name, "params": _params(teacher),
                        "accuracy": teacher_eval["accuracy"] if teacher_eval else None},
            "student": {"arch": getattr(smeta, "name", "custom"), "params": _params(res.student),
                        "accuracy": final["accuracy"] if final else None, **res.summary},
            "config": engine.resolved_config(),
        }
        write_report(run, report, res.history, f"datafree distill: {meta.name} -> {report['student']['arch']}")
    return res


def _distill_cfg(synthesizer: str, synth: dict | None, replay: str, replay_opts: dict | None, guide,
                 guide_opts: dict | None, options: dict) -> DistillConfig:
    """``distill``'s arguments as its config (a guide given as a path is recorded; one given in memory is not)."""
    return DistillConfig(synthesizer=synthesizer, synth=dict(synth or {}), replay=replay,
                         replay_opts=dict(replay_opts or {}), guide_opts=dict(guide_opts or {}),
                         guide=str(guide) if isinstance(guide, (str, os.PathLike)) else None,
                         **checked_options(DistillConfig, options, "distill"))


def distill_config(*, synthesizer: str = "generator", synth: dict | None = None, replay: str = "memory-bank",
                   replay_opts: dict | None = None, guide=None, guide_opts: dict | None = None, **options) -> dict:
    """The configs a ``distill`` call with these arguments resolves to, defaults filled in, without building a
    model (the ``distill``, ``synthesizer``, ``replay`` and ``guide`` sections of its run's config): what a
    kept benchmark row is checked against before it is reused.  Arguments that are not settings (teacher,
    eval_data, ...) are ignored."""
    fields = {f.name for f in dataclasses.fields(DistillConfig)}
    cfg = _distill_cfg(synthesizer, synth, replay, replay_opts, guide, guide_opts,
                       {k: v for k, v in options.items() if k in fields})
    return {"distill": to_dict(cfg), **{k: to_dict(v) for k, v in method_configs(cfg).items()}}


def _data_used(engine: Distiller) -> str:
    g = engine.guide
    if g is None:
        return "none (data-free: no training image was used)"
    role = "steer the inversion and join the student's data" if g.guided else "join the student's data only"
    if engine.synth_off:
        role = "are the student's only data (no inversion)"
    return f"guide samples that {role}: {g.describe()}"


def train(model: nn.Module | str, data, *, epochs: int = 10, out: str | None = None, eval_data=None,
          num_classes: int | None = None, input_shape=None, mean=None, std=None, progress: bool = True,
          **options) -> dict:
    """Supervised training on real labelled data (npz / folder / 'mnist5k' / ImageSet)."""
    torch.manual_seed(options.get("seed", 0))
    model = as_model(model, None, num_classes)
    ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
    nc = num_classes or getattr(getattr(model, "datafree_meta", None), "num_classes", None) or int(ds.y.max()) + 1
    meta = model_meta(model, input_shape or tuple(ds.x.shape[1:]), nc, mean, std)
    if tuple(ds.x.shape[1:]) != tuple(meta.input_shape):
        raise DatafreeError(f"training images have shape {tuple(ds.x.shape[1:])} but the model takes "
                            f"{meta.input_shape}")
    check_model(model, meta, "model")
    if int(ds.y.max()) >= meta.num_classes:
        raise DatafreeError(f"class-count mismatch: labels go up to {int(ds.y.max())} but the model has "
                            f"{meta.num_classes} classes")
    cfg = TrainConfig(epochs=epochs, **options)
    run = RunDir(out) if out else None
    if run:
        run.write_config({"train": to_dict(cfg), "model": meta.name, "data": data_label(data),
                          "eval_data": data_label(eval_data)})
        run.reset_metrics()
    t0 = time.time()
    hist = train_supervised(model, ds.float(), ds.y, cfg, meta.mean, meta.std, progress)
    ex, ey = _eval_tensors(eval_data, meta)
    result = {"model": meta.name, "params": _params(model), "epochs": epochs, "elapsed_s": time.time() - t0,
              "train_accuracy": hist[-1]["train_accuracy"],
              "accuracy": evaluate(model, ex, ey)["accuracy"] if ex is not None else None}
    if run:
        from datafree.report import plot_series, write_markdown

        for h in hist:
            run.log_metrics(h)
        run.save_weights(model, "model.safetensors", {"arch": meta.name})
        run.save_json("report.json", result)
        keys = [k for k in ("train_accuracy", "loss") if k in hist[-1]]
        plot_series(hist, "epoch", keys, run.file("training.png"), f"{meta.name}: supervised training")
        held = f"{100 * result['accuracy']:.2f} %" if result["accuracy"] is not None else "not measured"
        write_markdown(run, f"datafree train: {meta.name}", [
            f"real labelled data: **{data_label(data)}**, {len(ds):,} images ({per_class_counts(ds.y)})",
            f"{epochs} epochs in {result['elapsed_s']:.0f} s; train accuracy {100 * result['train_accuracy']:.2f} %, "
            f"held-out accuracy {held}" + (f" on {data_label(eval_data)}" if eval_data is not None else ""),
            "weights: model.safetensors"], ["training.png"])
    result["model_obj"] = model
    return result


@dataclasses.dataclass
class QuantResult:
    model: nn.Module  # the fake-quantized model (BN folded)
    report: dict
    run_dir: str | None = None


def _calibration_data(calib, model: nn.Module, meta: ModelMeta, n: int, seed: int, progress: bool,
                      label: str | None = None) -> tuple[torch.Tensor, str]:
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
        return _saved_calibration(calib, meta, n)
    ds = load_dataset(str(calib)) if isinstance(calib, (str, os.PathLike)) else calib
    if tuple(ds.x.shape[1:]) != tuple(meta.input_shape):
        raise DatafreeError(f"calibration images have shape {tuple(ds.x.shape[1:])} but the model takes "
                            f"{tuple(meta.input_shape)}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    x = normalize(ds.x[idx].float() / 255, meta.mean, meta.std)
    return x, f"real: {len(idx)} images from {label or data_label(calib)} ({per_class_counts(ds.y[idx])})"


def _saved_calibration(path, meta: ModelMeta, n: int) -> tuple[torch.Tensor, str]:
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


def _save_calibration(run: RunDir, x: torch.Tensor, desc: str) -> None:
    from datafree.io.safetensors import save_safetensors

    save_safetensors({"images": x.contiguous()}, run.file("calib.safetensors"), {"description": desc})


def quantize(model: nn.Module | str, config=None, calib=None, *, weights: str | None = None,
             num_classes: int | None = None, input_shape=None, mean=None, std=None, eval_data=None,
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
    for name in cfg.resolved_algorithms():  # a bad algorithm or option fails before minutes of calibration
        cfg.algorithm_config(name)
    cfg.specs()
    model = as_model(model, weights, num_classes).eval()
    meta = model_meta(model, input_shape, num_classes, mean, std)
    check_model(model, meta, "model")
    run = RunDir(out) if out else None
    if run:
        run.expect("quantize")
    t0 = time.time()
    x, calib_desc = _calibration_data(calib, model, meta, calib_samples, seed, progress)
    t_calib = time.time() - t0
    if run:  # reusable with --calib run/calib.safetensors (synthesis of 512 images takes minutes on a CPU)
        _save_calibration(run, x, calib_desc)
    qmodel, info = run_quant(model, cfg, x, progress)
    ex, ey = _eval_tensors(eval_data, meta)
    report = {"kind": "post-training quantization", "model": meta.name, "config": to_dict(cfg),
              "calibration": calib_desc, "calibration_data_s": round(t_calib, 1), **info,
              "eval_data": data_label(eval_data), "machine": machine_info()}
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
                          "calib": data_label(calib) or "synthetic", "calib_samples": calib_samples, "seed": seed,
                          "onnx": onnx, "calibration": calib_desc, "eval_data": report["eval_data"]})
        from datafree.quant.checkpoint import save_quantized

        save_quantized(qmodel, cfg, run.file("quantized.safetensors"), {
            "arch": meta.name, "format": "fake-quantized (dequantized grid values), BN folded, with every quantizer's "
            "parameters: datafree.quant.load_quantized", "weights": cfg.weights, "activations": str(cfg.activations)})
        from datafree.report import write_quant_report

        write_quant_report(run, report)
    return QuantResult(qmodel, report, str(run.path) if run else None)


def export_report(model: nn.Module, qmodel: nn.Module, meta: ModelMeta, run: RunDir, ex, progress: bool = True) -> dict:
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


def sweep(model: nn.Module | str, *, weights: str | None = None, eval_data=None, calib=None, w_bits=(3, 4, 5, 6, 7, 8),
          a_bits=(4, 6, 8), exps: tuple[int, ...] = (2, 3), all_splits: bool = False,
          algorithms: list[list[str]] | None = None, eval_samples: int = 2000, calib_samples: int = 512,
          out: str = "runs/sweep", num_classes: int | None = None, input_shape=None, mean=None, std=None,
          seed: int = 0, progress: bool = True) -> list[dict]:
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
    run = RunDir(out)
    x, desc = _calibration_data(calib, model, meta, calib_samples, seed, progress)
    _save_calibration(run, x, desc)
    ex, ey = _eval_tensors(eval_data, meta)
    ex, ey = ex[:eval_samples], ey[:eval_samples]

    def fmts(bits):
        return [f for b in bits for f in format_splits(b)] if all_splits else default_formats(list(bits), exps)

    rows = run_sweep(model, x, ex, ey, fmts(w_bits), fmts(a_bits), algorithms or [[]], run.file("sweep.csv"),
                     progress=progress)
    plot_pareto(rows, run.file("pareto.png"), f"{meta.name}: accuracy ({len(ex)} held-out images) vs MAC cost")
    run.save_json("sweep.json", {"model": meta.name, "calibration": desc, "eval_samples": len(ex),
                                 "w_bits": list(w_bits), "a_bits": list(a_bits), "points": len(rows),
                                 "algorithms": [("+".join(a) or "rtn") for a in (algorithms or [[]])],
                                 "machine": machine_info()})
    return rows


def condense(data, *, ipc: int = 10, budget: str | None = "25m", iterations: int | None = None, out: str,
             seed: int = 0, progress: bool = True, **options) -> dict:
    """Dataset condensation by Distribution Matching (the data owner's side): ``ipc`` images per class from
    labelled ``data`` (npz / folder / ImageSet); writes ``out``/condensed.npz (the ../shared npz format),
    a grid PNG, metrics.jsonl, config.yaml and report.json."""
    from datafree.condense import DMConfig
    from datafree.condense import condense as run_condense
    from datafree.data.loaders import save_npz

    cfg = DMConfig(ipc=ipc, budget=None if iterations else budget, iterations=iterations, seed=seed, **options)
    run = RunDir(out)
    ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
    run.write_config({"condense": to_dict(cfg), "data": str(data) if isinstance(data, (str, os.PathLike)) else None})
    run.reset_metrics()
    t0 = time.time()
    syn, hist = run_condense(ds, cfg, progress, run.log_metrics)
    if hist and hist[-1]["iteration"] % 10:  # metrics.jsonl holds every 10th iteration and the last
        run.log_metrics(hist[-1])
    save_npz(syn, run.file("condensed.npz"))
    from datafree.report import plot_series, save_grid, write_markdown

    save_grid(syn, run.file("condensed.png"))
    plot_series(hist, "iteration", ["loss"], run.file("loss.png"), "Distribution Matching loss", log_y=True)
    report = {"kind": "dataset condensation (Distribution Matching)", "ipc": ipc, "images": len(syn),
              "classes": len(syn.counts()), "source": str(data) if isinstance(data, (str, os.PathLike)) else None,
              "source_images": len(ds), "iterations": len(hist), "wall_s": time.time() - t0,
              "first_loss": hist[0]["loss"] if hist else None, "last_loss": hist[-1]["loss"] if hist else None,
              "config": to_dict(cfg), "machine": machine_info(), "npz": str(run.file("condensed.npz"))}
    run.save_json("report.json", report)
    write_markdown(run, f"datafree condense: {ipc} image(s) per class", [
        f"real labelled data condensed: **{data_label(data)}**, {len(ds):,} images ({per_class_counts(ds.y)})",
        f"Distribution Matching, {len(hist)} iterations in {report['wall_s']:.0f} s; loss {report['first_loss']:.1f} "
        f"-> {report['last_loss']:.1f}" if hist else "no iteration ran",
        f"output: condensed.npz, {len(syn)} images (uint8, the npz format of ../shared/data)"],
        ["condensed.png", "loss.png"])
    return report
