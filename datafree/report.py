"""report.json + report.md (with an accuracy-over-time PNG when matplotlib is installed)."""

from __future__ import annotations

from datafree.data.loaders import ImageSet
from datafree.io.atomic import atomic_write_text
from datafree.run import RunDir
from datafree.types import PathLike


def plot_accuracy(history: list[dict], path: PathLike, title: str = "held-out accuracy over the run") -> bool:
    return plot_runs({"": history}, path, title)


def plot_runs(histories: dict[str, list[dict]], path: PathLike, title: str = "held-out accuracy over the run") -> bool:
    """Accuracy over method time, one line per named run (a legend when there are several)."""
    curves = {name: [(h["elapsed_s"] / 60, h["accuracy"]) for h in hist if h.get("accuracy") is not None]
              for name, hist in histories.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return False
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=2.5, lw=1.2, label=name or None)
    ys = [100 * p[1] for pts in curves.values() for p in pts]
    lo, hi = min(ys), max(ys)
    if hi - lo < 10:  # at least 10 points of range: a 0.1-point wobble must not look like a crash
        mid = min(max((hi + lo) / 2, 5), 95)
        ax.set_ylim(mid - 5.5, mid + 5.5)
    ax.set_xlabel("method time (min)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def plot_series(rows: list[dict], x: str, ys: list[str], path: PathLike, title: str, log_y: bool = False,
                bars: bool = False, ylabel: str | None = None) -> bool:
    """Columns ``ys`` of ``rows`` against column ``x`` (as lines, or bars), one PNG; False without matplotlib or
    data."""
    rows = [r for r in rows if all(r.get(k) is not None for k in (x, *ys))]
    plt = pyplot() if rows else None
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    pos = list(range(len(rows)))
    for i, k in enumerate(ys):
        vals = [r[k] for r in rows]
        if bars:
            w = 0.8 / len(ys)
            ax.bar([p + i * w for p in pos], vals, w, label=k)
        else:
            ax.plot([r[x] for r in rows], vals, lw=1.2, label=k)
    if bars:
        ax.set_xticks([p + 0.4 - 0.4 / len(ys) for p in pos], [str(r[x]) for r in rows], rotation=60, ha="right",
                      fontsize=6)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or (ys[0] if len(ys) == 1 else "value"))
    if not bars and all(isinstance(r[x], int) for r in rows):  # epochs, iterations: no 1.25
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if log_y:
        ax.set_yscale("log")
    if len(ys) > 1:
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def write_markdown(run: RunDir, title: str, items: list[str], images: list[str]) -> None:
    """A short report.md: a title, a bulleted list of what the run did and used, and its PNGs."""
    lines = [f"# {title}", "", *(f"- {s}" for s in items), ""]
    lines += [f"![{name}]({name})" for name in images if run.file(name).is_file()]
    atomic_write_text(run.file("report.md"), "\n".join(lines) + "\n")


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed (plots are optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: PathLike, tight: bool = True, pad: float = 1.08) -> None:
    """Write a matplotlib figure atomically (temp file + rename) and close it."""
    import os

    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout(pad=pad)
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _held_out(report: dict) -> str:
    """The held-out set a report names: its path (or "given in memory") and how many images were scored."""
    n = report.get("eval_images")
    if not report.get("eval_data") and n is None:
        return "none"
    return f"{report.get('eval_data') or 'given in memory'}" + (f", {n:,} images" if n is not None else "")


def write_report(run: RunDir, report: dict, history: list[dict], title: str) -> None:
    run.save_json("report.json", report)
    has_plot = plot_accuracy(history, run.file("accuracy.png"))
    s = report.get("student", {})
    lines = [f"# {title}", ""]
    lines += [f"- data used by the method: **{report.get('data_used', 'none (data-free)')}**",
              f"- held-out data (reporting only): {_held_out(report)}",
              f"- budget: {report.get('budget')}, method time {report.get('elapsed_s', 0):.0f} s, "
              f"rounds {s.get('rounds', '-')}"]
    if s.get("replay"):
        fp = s.get("replay_footprint", {})
        lines.append(f"- replay: **{s['replay']}**, holding {fp.get('bytes', 0) / 1e6:.2f} MB "
                     f"({', '.join(f'{k} {v:,}' for k, v in fp.items() if k != 'bytes')}); "
                     f"{s.get('replayed_images', 0):,} replayed images; novel window {s.get('novel_window', '-')}")
        if s["replay"] != "none" and not s.get("replayed_images") and s.get("rounds"):
            lines.append("- **no replay happened in this run**: the budget ended before the replay had anything to "
                         "offer (a VAE starts after `min_updates` updates of its own): give a longer budget or lower "
                         "`--replay-opt min_updates`")
    if s.get("time_split_s"):
        lines.append("- method time: " + ", ".join(f"{k} {v:.0f} s" for k, v in s["time_split_s"].items()))
    lines.append("")
    rows = [("teacher", report.get("teacher", {})), ("student", s)]
    lines += ["| model | params | last acc. | mean acc. over run | variance | max drawdown |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        r = {**r, "last": r.get("last_accuracy", r.get("accuracy"))}  # the last of the evaluations the mean is of
        pct = {k: f"{100 * r[k]:.2f} {unit}" if r.get(k) is not None else "-"
               for k, unit in (("last", "%"), ("mean_accuracy", "%"), ("max_drawdown", "pt"))}
        var = f"{r['var_accuracy'] * 1e4:.2f} pt²" if r.get("var_accuracy") is not None else "-"
        lines.append(f"| {name} ({r.get('arch', '?')}) | {r.get('params', 0):,} | {pct['last']} | "
                     f"{pct['mean_accuracy']} | {var} | {pct['max_drawdown']} |")
    lines += ["", "- max drawdown: the largest fall between two consecutive evaluations (not peak to trough)",
              f"- synthetic images/s: {s.get('synthetic_images_per_s', 0):.1f}; student images/s: "
              f"{s.get('student_images_per_s', 0):.1f}",
              f"- rounds with suspected generator collapse: {s.get('collapse_rounds', 0)}", ""]
    if has_plot:
        lines += ["![accuracy over time](accuracy.png)", ""]
    fp32 = s.get("accuracy")
    bf16 = ", under bf16 autocast" if report.get("config", {}).get("distill", {}).get("bf16") else ""
    ema = report.get("config", {}).get("distill", {}).get("ema")
    final = (f"of the EMA of the student's weights (decay {ema}), which is what was saved as student.safetensors"
             if ema else "of the final student, saved as student.safetensors")
    if any(r.get("accuracy") is not None for r in history):
        lines += ["Accuracy is measured on the held-out data after every round, outside the method's clock "
                  f"(metrics.jsonl{bf16}); "
                  "nothing is selected by it.  `last` is the last of those evaluations, " + final
                  + (f"; re-evaluated in float32 it scores {100 * fp32:.2f} %." if fp32 is not None else "."), ""]
    else:
        lines += ["No held-out data was given (--eval-data), so no accuracy was measured; the saved student is "
                  + final.removeprefix("of ") + ".", ""]
    atomic_write_text(run.file("report.md"), "\n".join(lines))


def write_quant_report(run: RunDir, report: dict) -> None:
    """report.json + report.md of a quantization run."""
    run.save_json("report.json", report)
    cfg = report["config"]
    acc = report.get("accuracy")
    layers = report.get("layers") or []
    acts = f"activations **{cfg['activations']}** per tensor" if cfg["activations"] else "activations in float " \
        "(weight-only)"
    unsigned = [m for m in layers if (m["activations"] or "").startswith("uint")]
    if cfg["activations"] and not cfg["activations"].startswith("uint") and unsigned:
        acts += (f" ({len(unsigned)} of {len(layers)} layers take {unsigned[0]['activations']}: their inputs are "
                 "non-negative, after a ReLU, so the sign bit goes to range)")
    edge = "" if not layers else "; the first and last layers: " + ", ".join(  # the formats used, after --edge-bits
        f"{m['name']} {m['weights']} x {m['activations'] or 'float'}" for m in layers[:1] + layers[1:][-1:]) + \
        (f" (--edge-bits {cfg['edge_bits']} widens them, never narrows)" if cfg["edge_bits"] else " (as the rest)")
    lines = [f"# datafree quantize: {report['model']}", "",
             f"- weights **{cfg['weights']}** per {cfg['w_granularity']}, {acts}{edge}",
             f"- algorithms: {', '.join(report['algorithms']) or 'round-to-nearest only'}",
             f"- calibration data: **{report['calibration']}**",
             f"- held-out data (reporting only): {_held_out(report)}", ""]
    if acc is not None:
        fp = report["fp32_accuracy"]
        lines += ["| model | accuracy | size (weights packed at their bit widths, computed) |", "|---|---:|---:|",
                  f"| FP32 | {100 * fp:.2f} % | {report['size']['fp32_bytes'] / 1e6:.3f} MB |",
                  f"| quantized | {100 * acc:.2f} % ({100 * (acc - fp):+.2f} pt) | "
                  f"{report['size']['quantized_bytes'] / 1e6:.3f} MB ({report['size']['compression']:.1f}x) |", ""]
    z = report.get("weight_zeros") or {}
    if z.get("fp32_zeros_kept") is not None and z["fp32"] >= 0.01:  # a pruned model
        lines.append(f"- sparsity: {100 * z['fp32']:.1f} % of the weights were zero, "
                     f"{100 * z['fp32_zeros_kept']:.2f} % of them still are; {100 * z['quantized']:.1f} % zero "
                     "after quantization")
        sz = report["size"]
        if sz.get("sparse_bytes", sz["quantized_bytes"]) < sz["quantized_bytes"]:
            lines.append(f"- in its sparse pattern (kept N:M values + indices + block map, for a kernel or "
                         f"accelerator that reads it): {sz['sparse_bytes'] / 1e6:.3f} MB "
                         f"({sz['sparse_compression']:.1f}x smaller than FP32)")
    names = ("quantized.safetensors", *(("model_fp32.onnx", "model_int8.onnx") if report.get("onnx") else ()))
    files = [f"{name} {run.file(name).stat().st_size / 1e6:.3f} MB" for name in names if run.file(name).is_file()]
    if files:  # the real files, beside the computed size above
        lines.append("- files: " + ", ".join(files) + " (quantized.safetensors: the weights as bit-packed codes "
                     "and scales, with the activation quantizers; `datafree evaluate --weights` reads it)")
    if report.get("mac"):
        m = report["mac"]
        lines.append(f"- one MAC ({m['weights']} x {m['activations']}), Yosys LUT-6 synthesis: {m['luts']} LUTs, "
                     f"{m['ffs']} FFs, depth {m['depth']}, {m['acc_bits']}-bit accumulator"
                     + (" (the unsigned layers' MAC is not in the table; it is no wider)" if unsigned else ""))
    if report.get("onnx"):
        o = report["onnx"]
        lines.append(f"- ONNX: {o['fp32']} and {o['int8']} (QDQ); onnxruntime batch 64: FP32 "
                     f"{o['latency_fp32']['median_ms']:.1f} ms, INT8 {o['latency_int8']['median_ms']:.1f} ms "
                     f"({o['speedup_batch64']:.2f}x)")
        if "int8_vs_fake_quant" in o:
            d = o["int8_vs_fake_quant"]
            lines.append(f"- INT8 ONNX vs fake-quant PyTorch on {d['images']} images: top-1 agreement "
                         f"{100 * d['top1_agreement']:.2f} %, mean |logit diff| {d['mean_abs_logit_diff']:.4f} "
                         f"(mean |logit| {d['mean_abs_logit']:.2f})")
    lines += ["", "Steps: " + ", ".join(f"{k} {v.get('seconds', 0):.1f} s" for k, v in report["steps"].items()), ""]
    if run.file("weight_error.png").is_file():
        lines += ["![relative squared error of each layer's quantized weights](weight_error.png)", ""]
    atomic_write_text(run.file("report.md"), "\n".join(lines))


def save_grid(ds: ImageSet, path: PathLike, per_row: int | None = None) -> bool:
    """A PNG grid of an ImageSet, one row per class (as DC's visualisations)."""
    plt = pyplot()
    if plt is None:
        return False
    import torch

    classes = sorted(ds.counts())
    per = per_row or max(ds.counts().values())
    fig, axes = plt.subplots(len(classes), per, figsize=(per * 0.6, len(classes) * 0.6), dpi=100, squeeze=False)
    for r, c in enumerate(classes):
        idx = torch.nonzero(ds.y == c).flatten()[:per]
        for k in range(per):
            ax = axes[r][k]
            ax.axis("off")
            if k < len(idx):
                img = ds.x[idx[k]].permute(1, 2, 0).numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    save_figure(fig, path, pad=0.1)
    return True


def write_prune_report(run: RunDir, report: dict, history: list[dict]) -> None:
    """report.json + report.md + pruning.png (accuracy on the user's classes and density per phase)."""
    run.save_json("report.json", report)
    has_plot = _plot_pruning(history, run.file("pruning.png"))
    cfg, sp, mac, st = report["config"], report["sparsity"], report["macs"], report["storage"]
    d, p = report.get("dense", {}), report.get("pruned", {})
    lines = [f"# datafree prune: {report['model']} for classes {report['classes']}", "",
             f"- method: {report['kind']}; pattern {cfg['n']}:{cfg['m']} inside {cfg['block']}x{cfg['block']} "
             f"blocks, block sparsity target {cfg['block_sparsity']:.2f} in {cfg['steps']} steps, saliency "
             f"{cfg['saliency']}",
             f"- data used by the method: **{report['data']}**",
             f"- held-out data (reporting only): {_held_out(report)}", ""]
    if cfg["block_sparsity"] > 0 and not p.get("block_sparsity"):
        lines[-1:-1] = [f"- **no block was removed**: no layer of this model can take {cfg['block']}x{cfg['block']} "
                        f"blocks (the first and last layers never do), so only {cfg['n']}:{cfg['m']} was applied; a "
                        "smaller --block may fit"]
    if "accuracy" in p:
        lines += ["| model | user classes | among user classes only | other classes |", "|---|---:|---:|---:|"]
        for name, r in (("dense", d), ("pruned", p)):
            lines.append(f"| {name} | {100 * r['accuracy']:.2f} % | {100 * r['accuracy_among_user_classes']:.2f} % | "
                         + (f"{100 * r['accuracy_other_classes']:.2f} % |" if "accuracy_other_classes" in r else "- |"))
        lines.append("")
    lines += [f"- weights (Conv2d/Linear): {sp['weights']:,}, {100 * sp['sparsity']:.1f} % zero",
              f"- MACs per image: {mac['dense_macs']:,} dense, {mac['nonzero_macs']:,} with a non-zero weight "
              f"({mac['mac_reduction']:.2f}x fewer; needs a kernel or accelerator that skips the pattern - "
              "PyTorch's dense CPU kernels do not)",
              f"- storage: {st['dense_bytes']:,} B dense fp32, {st['compressed_bytes']:,} B as values + N:M indices "
              f"+ block map ({st['compression']:.2f}x)",
              (f"- time: data {report['data_s']:.0f} s, pruning and fine-tuning {report.get('method_s', 0):.0f} s "
               f"(what --budget limits; all sessions of a resumed run); this session's wall-clock "
               f"{report['prune_s']:.0f} s after the data" + (", held-out evaluation included"
                                                             if report.get("eval_data") else "")),
              ""]
    if has_plot:
        lines += ["![accuracy and density per phase](pruning.png)", ""]
    atomic_write_text(run.file("report.md"), "\n".join(lines))


def _plot_pruning(history: list[dict], path: PathLike) -> bool:
    rows = [h for h in history if "accuracy" in h]
    if not rows:
        return False
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    ph = [h["phase"] for h in rows]
    ax.plot(ph, [100 * h["accuracy"] for h in rows], marker="o", label="accuracy, user classes (%)")
    ax.plot(ph, [100 * h["pruned_layer_density"] for h in rows], marker="s", label="density of pruned layers (%)")
    ax.set_xlabel("phase (0: dense, saliency only; 1: N:M; then block steps)")
    ax.set_title("CRISP: accuracy and density per phase")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True
