"""Design-space sweep: accuracy against hardware cost over weight x activation formats x algorithms.

For every (weight format, activation format, algorithm set) the model is quantized on the same
calibration data and evaluated; the cost of one MAC of that format pair comes from the committed Yosys
table (``datafree.hw.cost``).  Output: a CSV with one row per point, flagged when on the Pareto front
(no other point is both more accurate and cheaper in LUTs), and a PNG of accuracy vs LUTs per MAC.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch
from torch import nn

from datafree.evaluate import evaluate
from datafree.hw.cost import format_key, load_table, mac_cost
from datafree.io.atomic import atomic_write_text
from datafree.progress import Progress
from datafree.quant import QuantConfig, quantize
from datafree.quant.formats import Format, IntFormat, MinifloatFormat, format_splits
from datafree.report import pyplot, save_figure

FIELDS = ["weights", "activations", "w_bits", "a_bits", "algorithms", "accuracy", "luts", "ffs", "depth",
          "acc_bits", "quantized_bytes", "seconds", "pareto"]


def default_formats(bits: list[int], exps: tuple[int, ...] = (2, 3)) -> list[Format]:
    """Per bit width: the integer and the minifloat splits with ``exps`` exponent bits (plus E4M3 and E5M2
    at 8 bits); ``exps=()`` with ``all_splits`` in the CLI gives every split."""
    out: list[Format] = []
    for b in bits:
        for f in format_splits(b):
            ocp8 = b == 8 and isinstance(f, MinifloatFormat) and f.e in (4, 5)
            if isinstance(f, IntFormat) or ocp8 or (isinstance(f, MinifloatFormat) and f.e in exps):
                out.append(f)
    return out


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: True where no other point has cost <= and accuracy >= with one strict."""
    flags = []
    for i, (c, a) in enumerate(points):
        flags.append(not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points)
                             if j != i))
    return flags


def _typed(v: str) -> object:
    """A CSV cell back as the number or flag it was written from, so that earlier and new points agree in type."""
    if v in ("True", "False"):
        return v == "True"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def sweep(model: nn.Module, calib: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
          w_formats: list[Format], a_formats: list[Format], algorithms: list[list[str]], out_csv: str | os.PathLike,
          table: dict | None = None, progress: bool = True, resume: bool = True) -> list[dict]:
    table = table if table is not None else load_table()
    out_csv = Path(out_csv)
    rows: list[dict] = []
    if resume and out_csv.is_file():
        with open(out_csv) as f:
            rows = [{k: _typed(v) for k, v in r.items()} for r in csv.DictReader(f)]
    seen = {(r["weights"], r["activations"], r["algorithms"]) for r in rows}
    todo = [(w, a, al) for w in w_formats for a in a_formats for al in algorithms
            if (format_key(w), format_key(a), "+".join(al) or "rtn") not in seen]
    bar = Progress("sweep", progress)
    for i, (w, a, algos) in enumerate(todo):
        t0 = time.time()
        q, info = quantize(model, QuantConfig(weights=_name(w), activations=_name(a), algorithms=algos), calib,
                           progress=False)
        acc = evaluate(q, eval_x, eval_y)["accuracy"]
        cost = mac_cost(w, a, table)
        rows.append({"weights": format_key(w), "activations": format_key(a), "w_bits": w.bits, "a_bits": a.bits,
                     "algorithms": "+".join(algos) or "rtn", "accuracy": acc, "luts": cost["luts"], "ffs": cost["ffs"],
                     "depth": cost["depth"], "acc_bits": cost["acc_bits"],
                     "quantized_bytes": info["size"]["quantized_bytes"], "seconds": round(time.time() - t0, 1)})
        _write(rows, out_csv)
        bar.update((i + 1) / len(todo), info=f"{format_key(w)} x {format_key(a)} {acc:.4f}")
    bar.close()
    flags = pareto([(float(r["luts"]), float(r["accuracy"])) for r in rows])
    for r, f in zip(rows, flags):
        r["pareto"] = f
    _write(rows, out_csv)
    return rows


def _name(f: Format) -> str:
    return f.name if isinstance(f, IntFormat) else f"e{f.e}m{f.m}"


def _write(rows: list[dict], path: Path) -> None:
    import io

    buf = io.StringIO()
    wr = csv.DictWriter(buf, FIELDS, extrasaction="ignore")
    wr.writeheader()
    wr.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_pareto(rows: list[dict], path: str | os.PathLike, title: str) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    groups = {"int x int": [], "minifloat x minifloat": [], "mixed": []}
    for r in rows:
        wi, ai = r["weights"].startswith("int"), r["activations"].startswith("int")
        groups["int x int" if wi and ai else "minifloat x minifloat" if not (wi or ai) else "mixed"].append(r)
    for (name, rs), marker in zip(groups.items(), ("o", "s", "^")):
        if rs:
            ax.scatter([float(r["luts"]) for r in rs], [100 * float(r["accuracy"]) for r in rs], s=12, alpha=0.55,
                       marker=marker, label=name)
    front = sorted(((float(r["luts"]), 100 * float(r["accuracy"]), r) for r in rows if str(r.get("pareto")) == "True"),
                   key=lambda p: p[:2])  # points tied on both axes keep their order (rows do not compare)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k-", lw=1, label="Pareto front")
        for c, acc, r in front:
            ax.annotate(f"W {r['weights']} / A {r['activations']}", (c, acc), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("LUTs per MAC (Yosys, synth -lut 6)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
    return True
