"""The Python API.  Every CLI command is a thin shell around one function here or in the stage's pipeline module
(``datafree.quant.pipeline``: quantize, sweep; ``datafree.prune.pipeline``: prune)."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import torch
from torch import nn

from datafree.config import checked_options, make_checked, to_dict
from datafree.data.loaders import data_label, load_dataset, per_class_counts
from datafree.distill.engine import DistillConfig, Distiller, DistillResult, check_seed, method_configs
from datafree.distill.supervised import TrainConfig, train_supervised
from datafree.errors import DatafreeError
from datafree.evaluate import eval_tensors, evaluate, evaluate_dataset  # noqa: F401  (evaluate_dataset: the API)
from datafree.export.pipeline import export_model  # noqa: F401  (the API of `datafree export`)
from datafree.machine import cpu_model, machine_info  # noqa: F401  (cpu_model: for the benchmarks)
from datafree.models import as_model, check_model, data_meta, fixed_input_shape, meta_record, model_meta
from datafree.precision import resolve_bf16
from datafree.prune.pipeline import PruneResult, prune  # noqa: F401  (the API of `datafree prune`)
from datafree.quant.pipeline import QuantResult, export_report, quantize, sweep  # noqa: F401  (quantize, sweep)
from datafree.report import write_report
from datafree.run import RunDir
from datafree.types import Data, EvalData, Floats, Shape

# what a resumed run may change: the budget, speed settings, held-out data, and the learning rate (the way on after a
# NaN loss stopped a run: the cosine schedule is recomputed from it every step)
RESUME_FREE = frozenset({"distill.budget", "distill.rounds", "distill.bf16", "distill.channels_last",
                         "distill.deterministic", "distill.lr", "eval_data"})


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def distill(teacher: nn.Module | str, student: nn.Module | str, input_shape: Shape | None = None,
            num_classes: int | None = None, budget: str | None = "10m", rounds: int | None = None, seed: int = 0, *,
            teacher_weights: str | None = None, mean: Floats | None = None, std: Floats | None = None,
            eval_data: EvalData | None = None, out: str | None = None, resume: bool = False,
            synthesizer: str = "generator", synth: dict | None = None, replay: str = "memory-bank",
            replay_opts: dict | None = None, guide: Data | None = None, guide_opts: dict | None = None,
            progress: bool = True, **options) -> DistillResult:
    """Data-free KD: invert ``teacher`` into synthetic images and train ``student`` on them.

    ``synth`` holds options of the synthesizer's config (``GeneratorConfig``, ``PixelConfig``), ``replay``
    picks the replay strategy (none | memory-bank | vae) and ``replay_opts`` its config's options
    (``MemoryBankConfig``, ``VAEReplayConfig``).  ``guide`` (npz path or ImageSet: a condensed set or k real
    images per class) steers the inversion (``guide_opts``: ``GuideConfig``, mode guided | mix); with
    ``synthesizer="none"`` the student learns from the guide samples alone.
    ``options`` are fields of ``DistillConfig`` (batch_size, kd_steps, lr, temperature, ...).
    ``eval_data`` (npz path, ImageSet or (x, y) in the input space) is for reporting only.
    """
    check_seed(seed)  # before anything is built or written
    torch.manual_seed(seed)  # zoo students are initialised under the run's seed
    name, teacher = teacher, as_model(teacher, teacher_weights, num_classes)  # an unknown name fails here first
    if isinstance(name, str) and not teacher_weights and not name.split(":", 1)[0].endswith(".py"):
        raise DatafreeError(f"the teacher '{name}' would have random weights: pass its trained ones with "
                            "--teacher-weights (teacher_weights=)")  # a factory file may load its own
    meta = model_meta(teacher, input_shape, num_classes, mean, std)
    student = as_model(student, None, meta.num_classes)
    smeta = getattr(student, "datafree_meta", None)
    if fixed_input_shape(student) not in (None, tuple(meta.input_shape)):
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
    ex, ey = eval_tensors(eval_data, meta)
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
        student_meta = meta_record(dataclasses.replace(meta, name=getattr(smeta, "name", "custom")))
        run.save_weights(res.student, "student.safetensors", student_meta)
        report = {
            "kind": "data-free distillation" if engine.guide is None else "distillation with guide samples",
            "data_used": _data_used(engine),
            "eval_data": data_label(eval_data), "eval_images": len(ey) if ey is not None else None,
            "budget": str(engine.budget),
            "elapsed_s": res.summary["elapsed_s"], "wall_s": time.time() - t0,
            "machine": machine_info(engine.bf16, res.summary["threads"]),
            "teacher": {"arch": meta.name, "params": _params(teacher),
                        "accuracy": teacher_eval["accuracy"] if teacher_eval else None},
            "student": {"arch": getattr(smeta, "name", "custom"), "params": _params(res.student),
                        "accuracy": final["accuracy"] if final else None, **res.summary},
            "config": engine.resolved_config(),
        }
        write_report(run, report, res.history, f"datafree distill: {meta.name} -> {report['student']['arch']}")
    return res


def _distill_cfg(synthesizer: str, synth: dict | None, replay: str, replay_opts: dict | None, guide: Data | None,
                 guide_opts: dict | None, options: dict) -> DistillConfig:
    """``distill``'s arguments as its config (a guide given as a path is recorded; one given in memory is not)."""
    return DistillConfig(synthesizer=synthesizer, synth=dict(synth or {}), replay=replay,
                         replay_opts=dict(replay_opts or {}), guide_opts=dict(guide_opts or {}),
                         guide=str(guide) if isinstance(guide, (str, os.PathLike)) else None,
                         **checked_options(DistillConfig, options, "distill"))


def distill_config(*, synthesizer: str = "generator", synth: dict | None = None, replay: str = "memory-bank",
                   replay_opts: dict | None = None, guide: Data | None = None, guide_opts: dict | None = None,
                   **options) -> dict:
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


def train(model: nn.Module | str, data: Data, *, epochs: int = 10, out: str | None = None,
          eval_data: EvalData | None = None, num_classes: int | None = None, input_shape: Shape | None = None,
          mean: Floats | None = None, std: Floats | None = None, progress: bool = True, **options) -> dict:
    """Supervised training on real labelled data (npz / folder / 'mnist5k' / ImageSet)."""
    torch.manual_seed(options.get("seed", 0))
    model = as_model(model, None, num_classes)
    ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
    nc = num_classes or getattr(getattr(model, "datafree_meta", None), "num_classes", None) or int(ds.y.max()) + 1
    meta = data_meta(model, tuple(ds.x.shape[1:]), "training images", input_shape, nc, mean, std)
    check_model(model, meta, "model")
    if int(ds.y.max()) >= meta.num_classes:
        raise DatafreeError(f"class-count mismatch: labels go up to {int(ds.y.max())} but the model has "
                            f"{meta.num_classes} classes")
    cfg = make_checked(TrainConfig, dict(epochs=epochs, **options), "train")
    ex, ey = eval_tensors(eval_data, meta)  # bad held-out data fails now, not after the training
    run = RunDir(out) if out else None
    if run:
        run.claim({"train": to_dict(cfg), "model": meta.name, "data": data_label(data),
                   "eval_data": data_label(eval_data)}, resume=False, resumable=False)
        run.reset_metrics()
    t0 = time.time()
    hist = train_supervised(model, ds.float(), ds.y, cfg, meta.mean, meta.std, progress)
    result = {"model": meta.name, "params": _params(model), "epochs": epochs, "elapsed_s": time.time() - t0,
              "train_accuracy": hist[-1]["train_accuracy"],
              "accuracy": evaluate(model, ex, ey)["accuracy"] if ex is not None else None,
              "data": data_label(data), "images": len(ds), "per_class": {str(k): v for k, v in ds.counts().items()},
              "eval_data": data_label(eval_data), "eval_images": len(ey) if ey is not None else None,
              "config": to_dict(cfg), "machine": machine_info(cfg.bf16)}
    if run:
        from datafree.report import plot_series, write_markdown

        for h in hist:
            run.log_metrics(h)
        run.save_weights(model, "model.safetensors", meta_record(meta))
        run.save_json("report.json", result)
        keys = [k for k in ("train_accuracy", "loss") if k in hist[-1]]
        plot_series(hist, "epoch", keys, run.file("training.png"), f"{meta.name}: supervised training",
                    ylabel="train accuracy (0-1) and loss")
        held = f"{100 * result['accuracy']:.2f} %" if result["accuracy"] is not None else "not measured"
        write_markdown(run, f"datafree train: {meta.name}", [
            f"real labelled data: **{data_label(data)}**, {len(ds):,} images ({per_class_counts(ds.y)})",
            f"{epochs} epochs in {result['elapsed_s']:.0f} s; train accuracy {100 * result['train_accuracy']:.2f} %, "
            f"held-out accuracy {held}" + (f" on {data_label(eval_data)}" if eval_data is not None else ""),
            "weights: model.safetensors"], ["training.png"])
    result["model_obj"] = model
    return result


def condense(data: Data, *, ipc: int = 10, budget: str | None = "25m", iterations: int | None = None, out: str,
             seed: int = 0, method: str = "dm", progress: bool = True, **options) -> dict:
    """Dataset condensation (the data owner's side): ``ipc`` images per class from labelled ``data`` (npz /
    folder / ImageSet) by Distribution Matching (``method="dm"``, ``DMConfig`` fields as options) or Improved
    Distribution Matching (``"idm"``, ``IDMConfig``); writes ``out``/condensed.npz (the ../shared npz format),
    a grid PNG, metrics.jsonl, config.yaml and report.json."""
    from datafree.condense import METHODS
    from datafree.condense import condense as run_condense
    from datafree.condense.dm import check_data
    from datafree.data.loaders import save_npz

    if method not in METHODS:
        raise DatafreeError(f"unknown condensation method '{method}'; choose one of {', '.join(METHODS)}")
    cfg = make_checked(METHODS[method], dict(ipc=ipc, budget=None if iterations else budget, iterations=iterations,
                                             seed=seed, **options), "condense")
    ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
    check_data(ds, cfg)  # before anything is written
    run = RunDir(out)
    source = str(data) if isinstance(data, (str, os.PathLike)) else None
    run.claim({"condense": {"method": method, **to_dict(cfg)}, "data": source}, resume=False, resumable=False)
    run.reset_metrics()
    t0 = time.time()
    syn, hist = run_condense(ds, cfg, progress, run.log_metrics)
    if hist and hist[-1]["iteration"] % 10 and hist[-1]["iteration"] != 1:  # the first, every 10th and the last
        run.log_metrics(hist[-1])
    save_npz(syn, run.file("condensed.npz"))
    from datafree.report import plot_series, save_grid, write_markdown

    title = cfg.TITLE
    save_grid(syn, run.file("condensed.png"))
    plot_series(hist, "iteration", ["loss"], run.file("loss.png"), f"{title} loss", log_y=True,
                ylabel=f"{method.upper()} loss (log scale)")
    report = {"kind": f"dataset condensation ({title})", "method": method, "ipc": ipc, "images": len(syn),
              "classes": len(syn.counts()), "source": source,
              "source_images": len(ds), "iterations": len(hist), "wall_s": time.time() - t0,
              "first_loss": hist[0]["loss"] if hist else None, "last_loss": hist[-1]["loss"] if hist else None,
              "config": to_dict(cfg), "machine": machine_info(resolve_bf16(cfg.bf16)),
              "npz": str(run.file("condensed.npz"))}
    run.save_json("report.json", report)
    write_markdown(run, f"datafree condense: {ipc} image(s) per class", [
        f"real labelled data condensed: **{data_label(data)}**, {len(ds):,} images ({per_class_counts(ds.y)})",
        f"{title}, {len(hist)} iterations in {report['wall_s']:.0f} s; loss {report['first_loss']:.1f} "
        f"-> {report['last_loss']:.1f}" if hist else "no iteration ran",
        f"output: condensed.npz, {len(syn)} images (uint8, the npz format of ../shared/data)"],
        ["condensed.png", "loss.png"])
    return report
