"""Data-free post-training quantization of ResNet-56 (CIFAR-10, ../shared, FP32 93.39 %).

    python benchmarks/cifar10_ptq.py              # the full table (~2 h), then ONNX INT8 vs FP32 latency
    python benchmarks/cifar10_ptq.py --resume     # reuse rows already measured (runs/bench_cifar10_ptq/rows.jsonl)
    python benchmarks/cifar10_ptq.py --resume --algorithms 'rtn;gptq'   # a cheap pass first, formats in the given order

Rows: integer W8A8, W6A6, W4A8, W4A4 and minifloat FP8 E4M3 / E5M2, FP6 (E2M3 weights, E3M2
activations), FP4 E2M1 weights with FP8 or FP6 activations; each with round-to-nearest and with every
algorithm (CLE, SmoothQuant, bias correction, GPTQ, AdaRound - for weights below 8 bits - and GPTQ +
bias correction), calibrated on 512 synthetic images (inverted from the model: no real image); and
round-to-nearest, GPTQ and AdaRound calibrated on 512 real training images (train_subset.npz).
Accuracy on the full 10k test set, fp32 fake-quant.  First and last layers at 8 bits of the same family.
Then the W8A8 model (synthetic calibration, residual inputs quantized) goes to ONNX QDQ and is timed
against the FP32 ONNX model in onnxruntime at batch 64.  Writes
benchmarks/results/cifar10_ptq.json.  Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from datafree.evaluate import eval_tensors, evaluate
from datafree.experiments import command_line
from datafree.io.atomic import atomic_write_text
from datafree.machine import machine_info
from datafree.models import create_model, load_weights
from datafree.quant import QuantConfig, quantize
from datafree.quant.pipeline import calibration_data, export_report
from datafree.run import RunDir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FORMATS = [  # (label, weights, activations)
    ("W8A8 int", "int8", "int8"), ("W6A6 int", "int6", "int6"), ("W4A8 int", "int4", "int8"),
    ("W4A4 int", "int4", "int4"), ("FP8 E4M3", "fp8_e4m3", "fp8_e4m3"), ("FP8 E5M2", "fp8_e5m2", "fp8_e5m2"),
    ("FP6 E2M3/E3M2", "fp6_e2m3", "fp6_e3m2"), ("FP4 E2M1 / FP8 E4M3", "fp4_e2m1", "fp8_e4m3"),
    ("FP4 E2M1 / FP6 E3M2", "fp4_e2m1", "fp6_e3m2"),
]
ALGOS = [[], ["cle"], ["smoothquant"], ["bias_correction"], ["gptq"], ["adaround"], ["gptq", "bias_correction"]]
REAL_ALGOS = [[], ["gptq"], ["adaround"]]  # real calibration: the rows the synthetic-vs-real comparison needs
OPTIONS = {"adaround": {"iters": 500}}  # 500 steps per layer: ~3.5 min for ResNet-56 on this CPU


def algorithms_for(weights: str, calib: str) -> list[list[str]]:
    """All algorithms; AdaRound only where rounding matters (weights below 8 bits)."""
    algos = ALGOS if calib == "synthetic" else REAL_ALGOS
    eight = weights in ("int8", "fp8_e4m3", "fp8_e5m2")
    return [a for a in algos if not (eight and a == ["adaround"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_cifar10_ptq")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--formats", default=",".join(f[0] for f in FORMATS), help="comma-separated row labels")
    ap.add_argument("--calib", default="synthetic,real")
    ap.add_argument("--algorithms", help="only these algorithm sets, ';'-separated, e.g. 'rtn;gptq' (default all): "
                    "a first pass over every format with the cheap sets, then a --resume pass for the rest")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark needs ../shared beside the repo (looked in {SHARED})")
    torch.manual_seed(0)
    model = load_weights(create_model("resnet56"), SHARED / "models/cifar10/resnet56.pt").eval()
    meta = model.datafree_meta
    ex, ey = eval_tensors(str(SHARED / "data/cifar10/test.npz"), meta)
    run = RunDir(a.out)
    fp32 = evaluate(model, ex, ey)["accuracy"]
    calib = {}
    for kind in a.calib.split(","):
        cache = run.file(f"calib_{kind}.pt")
        if cache.is_file():
            calib[kind] = torch.load(cache, weights_only=True)
        else:
            t0 = time.time()
            src = None if kind == "synthetic" else str(SHARED / "data/cifar10/train_subset.npz")
            x, desc = calibration_data(src, model, meta, a.samples, 0, True)
            calib[kind] = {"x": x, "desc": desc, "seconds": time.time() - t0}
            torch.save(calib[kind], cache)
    rows_file = run.file("rows.jsonl")
    done = {}
    if a.resume and rows_file.is_file():
        for line in rows_file.read_text().splitlines():
            r = json.loads(line)
            done[(r["label"], r["calib"], "+".join(r["algorithms"]))] = r
    else:
        rows_file.write_text("")
    labels = a.formats.split(",")
    unknown = set(labels) - {f[0] for f in FORMATS}
    if unknown:
        sys.exit(f"unknown --formats {sorted(unknown)}; choose from {[f[0] for f in FORMATS]}")
    only = set(a.algorithms.split(";")) if a.algorithms else None
    for label, w, act in sorted((f for f in FORMATS if f[0] in labels), key=lambda f: labels.index(f[0])):
        for kind in calib:
            for algos in algorithms_for(w, kind):
                key = (label, kind, "+".join(algos or ["rtn"]))
                if key in done or (only is not None and key[2] not in only):
                    continue
                t0 = time.time()
                q, info = quantize(model, QuantConfig(weights=w, activations=act, algorithms=algos, options=OPTIONS),
                                   calib[kind]["x"], progress=False)
                acc = evaluate(q, ex, ey)["accuracy"]
                row = {"label": label, "weights": w, "activations": act, "algorithms": algos or ["rtn"],
                       "calib": kind, "accuracy": acc, "drop_pt": 100 * (fp32 - acc), "seconds": time.time() - t0,
                       "quantize_seconds": info["seconds"], "size": info["size"], "steps": info["steps"]}
                done[key] = row
                with open(rows_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{label:22s} {'+'.join(algos) or 'rtn':24s} {kind:9s} {100 * acc:6.2f} % "
                      f"({row['drop_pt']:+.2f} pt drop) {row['seconds']:.0f} s", flush=True)
    # INT8 deployment: W8A8 with residual-add inputs quantized, exported and timed
    q8, info8 = quantize(model, QuantConfig(weights="int8", activations="int8", quantize_residuals=True),
                         calib["synthetic"]["x"] if "synthetic" in calib else next(iter(calib.values()))["x"],
                         progress=False)
    onnx = export_report(model, q8, meta, run, ex)
    onnx["fake_quant_accuracy"] = evaluate(q8, ex, ey)["accuracy"]
    rows = list(done.values())
    result = {"benchmark": "cifar10_ptq", "model": "resnet56 (../shared/models/cifar10/resnet56.pt)",
              "fp32_accuracy": fp32, "eval": "full CIFAR-10 test set (10,000 images), fp32 fake-quant",
              "calibration": {k: {"desc": v["desc"], "seconds": v.get("seconds")} for k, v in calib.items()},
              "defaults": {"w_granularity": "channel", "observer": "mse", "edge_bits": 8, "samples": a.samples,
                           "options": OPTIONS},
              "rows": rows, "bars": {**ptq_bars(rows), **latency_bar(onnx)}, "onnx_int8": onnx,
              "machine": machine_info(),
              "command": command_line()}
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cifar10_ptq.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["bars"], indent=2))
    f32, i8 = onnx["latency_fp32"]["median_ms"], onnx["latency_int8"]["median_ms"]
    print(f"ONNX batch 64: FP32 {f32:.1f} ms, INT8 {i8:.1f} ms ({onnx['speedup_batch64']:.2f}x)")


def latency_bar(onnx: dict) -> dict:
    """The deployment bar: INT8 onnxruntime at least 2x faster than FP32 at batch 64 (median times)."""
    speedup = onnx["speedup_batch64"]
    return {"INT8 ONNX >= 2x faster than FP32 ONNX, batch 64": {"speedup": speedup, "met": speedup >= 2.0}}


def ptq_bars(rows: list[dict]) -> dict:
    def pick(label: str, calib: str, algos: list[str]) -> dict | None:
        return next((r for r in rows if r["label"] == label and r["calib"] == calib and r["algorithms"] == algos),
                    None)

    def best(label: str, calib: str, options: list[list[str]]) -> dict | None:
        cands = [r for r in (pick(label, calib, o) for o in options) if r]
        return min(cands, key=lambda r: r["drop_pt"]) if cands else None

    bars = {}
    for label in ("W8A8 int", "FP8 E4M3"):
        r = pick(label, "synthetic", ["rtn"])
        if r:
            bars[f"{label} synthetic RTN drop <= 0.2 pt"] = {"drop_pt": r["drop_pt"], "met": r["drop_pt"] <= 0.2}
    r = best("W4A8 int", "synthetic", [["gptq"], ["adaround"], ["gptq", "bias_correction"]])
    if r:
        bars["W4A8 int synthetic GPTQ/AdaRound drop <= 1.0 pt"] = {
            "algorithms": r["algorithms"], "drop_pt": r["drop_pt"], "met": r["drop_pt"] <= 1.0}
    for label in ("W8A8 int", "W4A8 int"):
        for algos in (["rtn"], ["gptq"], ["adaround"]):
            s, t = pick(label, "synthetic", algos), pick(label, "real", algos)
            if s and t:
                gap = 100 * (t["accuracy"] - s["accuracy"])  # > 0: real calibration is better
                bars[f"{label} {'+'.join(algos)} synthetic-vs-real gap <= 0.3 pt"] = {"gap_pt": gap,
                                                                                      "met": abs(gap) <= 0.3}
    return bars


if __name__ == "__main__":
    main()
