"""The Python API.  Every CLI command is a thin shell around one function here."""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import torch
from torch import nn

from datafree.config import to_dict
from datafree.data.augment import normalize
from datafree.data.loaders import ImageSet, load_dataset
from datafree.distill.engine import DistillConfig, Distiller, DistillResult
from datafree.distill.supervised import TrainConfig, train_supervised
from datafree.errors import DatafreeError
from datafree.evaluate import evaluate
from datafree.models import ModelMeta, create_model, load_weights, model_meta
from datafree.report import write_report
from datafree.run import RunDir


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
    meta = model_meta(model, input_shape or tuple(ds.x.shape[1:]), num_classes, mean, std)
    x, y = _eval_tensors(ds, meta)
    return evaluate(model, x, y)


def machine_info() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def distill(teacher: nn.Module | str, student: nn.Module | str, input_shape=None, num_classes: int | None = None,
            budget: str | None = "10m", rounds: int | None = None, seed: int = 0, *, teacher_weights: str | None = None,
            mean=None, std=None, eval_data=None, out: str | None = None, resume: bool = False,
            synthesizer: str = "generator", synth: dict | None = None, replay: str = "memory-bank",
            replay_opts: dict | None = None, progress: bool = True, **options) -> DistillResult:
    """Data-free KD: invert ``teacher`` into synthetic images and train ``student`` on them.

    ``synth`` holds options of the synthesizer's config (``GeneratorConfig``, ``PixelConfig``), ``replay``
    picks the replay strategy (none | memory-bank | vae) and ``replay_opts`` its config's options
    (``MemoryBankConfig``, ``VAEReplayConfig``).
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
    cfg = DistillConfig(synthesizer=synthesizer, synth=dict(synth or {}), replay=replay,
                        replay_opts=dict(replay_opts or {}), budget=budget, rounds=rounds, seed=seed, **options)
    run = RunDir(out) if out else None
    ex, ey = _eval_tensors(eval_data, meta)
    engine = Distiller(teacher, student, meta, cfg, run, ex, ey, progress)
    teacher_eval = evaluate(teacher, ex, ey, bf16=False) if ex is not None else None
    t0 = time.time()
    if run:
        run.write_config({**engine.resolved_config(),
                          "teacher": {"arch": meta.name, "weights": teacher_weights,
                                      "input_shape": list(meta.input_shape),
                                      "num_classes": meta.num_classes, "mean": meta.mean, "std": meta.std},
                          "student": {"arch": getattr(smeta, "name", "custom")},
                          "eval_data": str(eval_data) if isinstance(eval_data, (str, os.PathLike)) else None})
    res = engine.run_loop(resume=resume)
    final = evaluate(res.student, ex, ey) if ex is not None else None  # fp32, the number we report as last
    if final is not None:
        res.summary["last_accuracy_fp32"] = final["accuracy"]
    if run:
        student_meta = {"arch": getattr(smeta, "name", "custom"), "num_classes": str(meta.num_classes),
                        "mean": str(meta.mean), "std": str(meta.std), "input_shape": str(meta.input_shape)}
        run.save_weights(res.student, "student.safetensors", student_meta)
        report = {
            "kind": "data-free distillation", "data_used": "none (data-free: no training image was used)",
            "eval_data": str(eval_data) if eval_data is not None else None, "budget": str(engine.budget),
            "elapsed_s": res.summary["elapsed_s"], "wall_s": time.time() - t0, "machine": machine_info(),
            "teacher": {"arch": meta.name, "params": _params(teacher),
                        "accuracy": teacher_eval["accuracy"] if teacher_eval else None},
            "student": {"arch": getattr(smeta, "name", "custom"), "params": _params(res.student),
                        "accuracy": final["accuracy"] if final else None, **res.summary},
            "config": engine.resolved_config(),
        }
        write_report(run, report, res.history, f"datafree distill: {meta.name} -> {report['student']['arch']}")
    return res


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
        run.write_config({"train": to_dict(cfg), "model": meta.name, "data": str(data)})
        run.reset_metrics()
    t0 = time.time()
    hist = train_supervised(model, ds.float(), ds.y, cfg, meta.mean, meta.std, progress)
    ex, ey = _eval_tensors(eval_data, meta)
    result = {"model": meta.name, "params": _params(model), "epochs": epochs, "elapsed_s": time.time() - t0,
              "train_accuracy": hist[-1]["train_accuracy"],
              "accuracy": evaluate(model, ex, ey)["accuracy"] if ex is not None else None}
    if run:
        for h in hist:
            run.log_metrics(h)
        run.save_weights(model, "model.safetensors", {"arch": meta.name})
        run.save_json("report.json", result)
    result["model_obj"] = model
    return result
