"""``datafree.prune``: the data, the evaluation, the run directory and the report around a pruner."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings

import torch
from torch import nn

from datafree.config import to_dict
from datafree.data.loaders import data_label
from datafree.errors import DatafreeError
from datafree.prune import build_pruner, make_pruner_config
from datafree.prune.crisp import CRISPConfig, prunable, sparsity_stats
from datafree.prune.sparsity import pattern_bits
from datafree.types import Data, EvalData, Floats, Shape


@dataclasses.dataclass
class PruneResult:
    model: nn.Module  # the pruned model (plain modules, zeros in the pattern)
    report: dict
    history: list[dict]
    run_dir: str | None = None


@torch.no_grad()
def class_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> dict:
    """On held-out images: accuracy on the user's classes (argmax over all classes, and over the user's
    classes only - the deployed model's decision) and on the other classes.  One forward pass per image."""
    from datafree.evaluate import logits

    cls = torch.tensor(classes)
    pred_all = logits(model, x)
    user = torch.isin(y, cls)
    out = {}
    if user.any():
        out["accuracy"] = int((pred_all[user].argmax(1) == y[user]).sum()) / int(user.sum())
        out["accuracy_among_user_classes"] = float((cls[pred_all[user][:, cls].argmax(1)] == y[user]).float().mean())
    if (~user).any():
        out["accuracy_other_classes"] = int((pred_all[~user].argmax(1) == y[~user]).sum()) / int((~user).sum())
    return out


def mac_counts(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Multiply-accumulates per image of every Conv2d/Linear: all of them and those with a non-zero weight
    (what a sparse kernel or accelerator that skips the pattern's zeros executes)."""
    dense = nonzero = 0

    def hook(mod, args, out):
        nonlocal dense, nonzero
        pos = out[0, 0].numel() if out.ndim == 4 else 1
        dense += pos * mod.weight.numel()
        nonzero += pos * int((mod.weight != 0).sum())

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hs:
            h.remove()
        model.train(was)
    return {"dense_macs": dense, "nonzero_macs": nonzero, "mac_reduction": dense / max(1, nonzero)}


def storage(model: nn.Module, n: int, m: int, block: int) -> dict:
    """Bytes of the Conv2d/Linear weights: dense fp32, and in the compressed layout of ``pattern_bits`` (fp32
    values of the kept N:M slots, their indices, the block map)."""
    dense = comp = 0
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            dense += 32 * mod.weight.numel()
            comp += pattern_bits(mod.weight.detach(), 32, n, m, block)
    return {"dense_bytes": dense // 8, "compressed_bytes": comp // 8, "compression": dense / max(1, comp)}


def _check_classes(model: nn.Module, x: torch.Tensor, classes: list[int], source: str) -> str:
    """A saved, unlabelled image set (another run's ``calib.safetensors``) must hold images of the user's
    classes: the saliency is the class-aware loss on them.  The model's reading is their label."""
    from datafree.evaluate import logits

    counts = torch.bincount(logits(model, x).argmax(1), minlength=max(classes) + 1)[classes].tolist()
    per_class = dict(zip(classes, counts))
    missing = [c for c, k in per_class.items() if k == 0]
    if missing:
        raise DatafreeError(f"the model reads no image of {source} as class(es) {missing} (per user class: "
                            f"{per_class}); pass images of classes {classes}, e.g. the "
                            "calib.safetensors of a prune run for them, or drop --data for synthetic images")
    return f"; the model reads {sum(counts)} of {len(x)} as the user's classes ({per_class})"


def prune(model: nn.Module | str, *, classes: list[int] | None = None, method: str = "crisp",
          weights: str | None = None, data: Data | None = None, eval_data: EvalData | None = None,
          out: str | None = None, num_classes: int | None = None, input_shape: Shape | None = None,
          mean: Floats | None = None, std: Floats | None = None, seed: int = 0, progress: bool = True,
          resume: bool = False, **options) -> PruneResult:
    """Prune ``model`` for the user's ``classes`` (CRISP: hybrid N:M + block sparsity; ``options`` are
    ``CRISPConfig`` fields).  ``data``: None / "synthetic" (default: images inverted from the model for
    those classes - data-free), or real labelled data (npz / folder), of which only the user's classes are
    used.  ``eval_data`` is only used to report accuracy, never to choose anything.  ``resume``: continue
    the run in ``out`` after its last finished phase (a checkpoint is written after every phase)."""
    from datafree.evaluate import eval_tensors
    from datafree.machine import machine_info
    from datafree.models import as_model, check_model, meta_record, model_meta
    from datafree.quant.calib import _copy_eval
    from datafree.quant.pipeline import calibration_data, save_calibration
    from datafree.run import RunDir

    model = copy.deepcopy(as_model(model, weights, num_classes)).eval()  # the caller's module stays dense
    meta = model_meta(model, input_shape, num_classes, mean, std)
    check_model(model, meta, "model")
    classes = sorted(set(range(meta.num_classes) if classes is None else (int(c) for c in classes)))
    if not classes or classes[0] < 0 or classes[-1] >= meta.num_classes:
        raise DatafreeError(f"--classes must be class indices in 0..{meta.num_classes - 1}, got {classes}")
    cfg = make_pruner_config(method, **{**options, "classes": classes, "seed": seed})
    if isinstance(cfg, CRISPConfig):
        prunable(model, cfg)  # too few layers, an unknown skip name: refused now, not after minutes of synthesis
    run = RunDir(out) if out else None
    if run:
        run.expect("prune")
    ex, ey = eval_tensors(eval_data, meta)  # bad held-out data fails before minutes of synthesis
    state = run.load_checkpoint() if run and resume else None
    if state is not None:
        then = run.read_config() or {}
        if state.get("config") != to_dict(cfg) or then.get("model", meta.name) != meta.name or \
                then.get("weights", weights) != weights:
            raise DatafreeError(f"the checkpoint in {out} was made with other settings (model, weights or pruning "
                                "options); resume with the same ones or use another --out")
    elif run:
        run.refuse_if_taken()
    own = run.file("calib.safetensors") if state is not None else None
    t0 = time.time()
    n_images = cfg.samples_per_class * len(classes)
    if own is not None and own.is_file():  # the very images the interrupted run used, as it described them
        from datafree.io.safetensors import load_safetensors, read_metadata

        x, desc = load_safetensors(own)["images"].float(), read_metadata(own).get("description", "saved images")
    elif data is None or data == "synthetic":
        from datafree.quant.calib import synthetic_calibration

        x = synthetic_calibration(model, meta.input_shape, meta.num_classes, n_images, meta.mean, meta.std,
                                  seed=seed, progress=progress, classes=classes, oh=10.0)
        desc = (f"synthetic: {len(x)} images inverted from the model for classes {classes} (BN statistics + "
                "class term x10, DeepInversion); no real image")
    elif isinstance(data, (str, os.PathLike)) and str(data).endswith(".safetensors"):
        x, desc = calibration_data(data, model, meta, n_images, seed, progress)
        desc += _check_classes(model, x, classes, str(data))
    else:
        from datafree.data.loaders import class_counts, load_dataset, stratified_indices

        ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
        counts = class_counts(ds.y)
        missing = [c for c in classes if not counts.get(c)]
        if missing:
            raise DatafreeError(f"{data_label(data)} holds no image of class(es) {missing}: give data with images of "
                                "every --classes class, or leave --data out (synthetic images)")
        short = {c: counts[c] for c in classes if counts[c] < cfg.samples_per_class}
        if short:
            warnings.warn(f"{data_label(data)} holds fewer than {cfg.samples_per_class} images of classes "
                          f"{sorted(short)} ({', '.join(f'{c}: {k}' for c, k in short.items())}); they use all they "
                          "have", stacklevel=2)
        keep = stratified_indices(ds.y, classes, cfg.samples_per_class, seed)  # the same number per user class
        sub = dataclasses.replace(ds, x=ds.x[keep], y=ds.y[keep])
        x, desc = calibration_data(sub, model, meta, n_images, seed, progress,
                                    f"{data_label(data)}, classes {classes} only, drawn per class")
    t_data = time.time() - t0
    if run:
        save_calibration(run, x, desc)
        run.write_config({"prune": method, method: to_dict(cfg), "model": meta.name, "weights": weights,
                          "data": data_label(data) or "synthetic", "data_description": desc,
                          "eval_data": data_label(eval_data)})
        run.reset_metrics()
        for row in state["history"] if state else []:
            run.log_metrics(row)
    teacher = _copy_eval(model)  # the dense model, frozen: labels and KD targets
    dense_eval = class_accuracy(teacher, ex, ey, classes) if ex is not None else {}

    def ev(m: nn.Module) -> dict:
        return class_accuracy(m, ex, ey, classes) if ex is not None else {}

    t1 = time.time()
    save = (lambda st: run.save_checkpoint({**st, "config": to_dict(cfg)})) if run else None
    pruned, history = build_pruner(method, cfg).prune(model, teacher, x, ev, run.log_metrics if run else None,
                                                      progress, checkpoint=save, state=state)
    # the magnitude ablation's saliency ignores the classes: only its data and fine-tuning are the user's classes
    kind = ("class-aware pruning" if getattr(cfg, "saliency", "crisp") != "magnitude" else
            "magnitude pruning (class-agnostic |W| saliency, fine-tuned on the user's classes)")
    report = {"kind": f"{kind} ({method})", "model": meta.name, "classes": classes,
              "config": to_dict(cfg), "data": desc, "data_s": round(t_data, 1),
              "prune_s": round(time.time() - t1, 1),  # wall-clock, held-out evaluation included
              "method_s": history[-1]["elapsed_s"] if history else 0.0,  # what --budget limits
              "eval_data": data_label(eval_data), "eval_images": len(ey) if ey is not None else None,
              "dense": dense_eval, "pruned": history[-1] if history else {},
              "sparsity": sparsity_stats(pruned), "macs": mac_counts(pruned, meta.input_shape),
              "storage": storage(pruned, cfg.n, cfg.m, cfg.block), "machine": machine_info()}
    if run:
        run.save_weights(pruned, "pruned.safetensors", {**meta_record(meta), "pattern": f"{cfg.n}:{cfg.m} + "
                         f"{cfg.block}x{cfg.block} blocks", "classes": ",".join(map(str, classes))})
        from datafree.report import write_prune_report

        write_prune_report(run, report, history)
    return PruneResult(pruned, report, history, str(run.path) if run else None)
