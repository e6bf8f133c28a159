"""Replay against forgetting, MNIST-5k (embedded): LeNet-5 teacher -> data-free LeNet-5-half, short budget.

    python benchmarks/mnist_replay.py --budget 10m      # ~33 min: teacher + none, vae, memory-bank
    python benchmarks/mnist_replay.py --resume --variants none,vae,memory-bank,vae@frozen   # + the frozen VAE
    python benchmarks/mnist_replay.py --bank 2919456B --variants none,memory-bank,vae@frozenmix   # bank size given

The test-sized version of benchmarks/cifar10_replay.py: the teacher is trained on the 4,000-digit split
(reused from --out if there), every variant distills with the same seed and budget (the demo's
settings), and accuracy on the 1,000 held-out digits is measured after every round, outside the clock.
The memory bank gets ten times the VAE's measured footprint (``--bank 10x``, the vae row must run before it) or
``--bank`` bytes (2,919,456 B is that figure, so the vae row may be skipped); ``vae@frozen`` is the CIFAR-10 benchmark's
preset of that name (the VAE stops learning after 20 % of the budget, then fills a pool of 4-bit encodings of
the stream), its pool sized to the default VAE's footprint here: 46,516 B of weights + max(91,504 B of Adam
moments, 863 codes x 284 B) = 291,608 B against the default's 291,620 B.  The budget must let the VAE
reach ``min_updates`` (100 VAE steps, about 25 synthesized batches: 2.5 min on a 2-core machine) and then
replay for most of the run; at 120 s it replayed nothing, and a variant that replayed no sample gets no
verdict (``void`` in the bars).  Writes benchmarks/results/mnist_replay.json
and mnist_replay.png.  Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datafree
from datafree.api import machine_info
from datafree.data import load_mnist5k
from datafree.demo import DEMO_DISTILL, DEMO_SYNTH
from datafree.experiments import bank_options, command_line, markdown_table, reference_speed, replay_bars, run_variants
from datafree.io.atomic import atomic_write_text
from datafree.models import create_model, load_weights
from datafree.report import plot_runs

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"none": ("none", {}), "vae": ("vae", {}), "memory-bank": ("memory-bank", None),
            "vae@frozen": ("vae", {"codes": "encoded", "code_bits": 4, "pool": 863, "ratio": 0.5, "freeze": 0.2,
                                   "steps": 8})}
# frozenmix: each replay a blend of two codes, read by a live teacher pass; no cached logits: 1,225 codes x 200 B
VARIANTS["vae@frozenmix"] = ("vae", {**VARIANTS["vae@frozen"][1], "mix": 1.0, "pool": 1225})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_mnist_replay")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--bank", default="10x",
                    help="bank size: '10x' (times the vae row's footprint), '2919456B' or samples")
    ap.add_argument("--variants", default="none,vae,memory-bank",
                    help=f"comma-separated, of {', '.join(VARIANTS)}; with --bank 10x, memory-bank after vae")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    relative = a.bank.endswith("x")
    if unknown or (relative and "memory-bank" in names and "vae" not in names[:names.index("memory-bank")]):
        sys.exit(f"--variants: choose from {', '.join(VARIANTS)}, with vae before memory-bank when --bank is "
                 f"relative (got {a.variants})")
    out = Path(a.out)
    tpath = out / "teacher" / "model.safetensors"
    if tpath.is_file():
        teacher = load_weights(create_model("lenet5"), tpath)
    else:
        teacher = datafree.train("lenet5", load_mnist5k("train"), epochs=12, out=str(out / "teacher"), lr=0.05,
                                 flip=False, seed=a.seed)["model_obj"]
    # the committed rows ran the demo's settings with its earlier 64-wide generator (now 16: datafree/demo.py)
    common = dict(teacher=teacher, student="lenet5_half", budget=a.budget, seed=a.seed,
                  eval_data=load_mnist5k("test"), synth={**DEMO_SYNTH, "ngf": 64}, **DEMO_DISTILL)
    res: dict[str, dict] = {}
    for name in names:
        kind, opts = VARIANTS[name]
        if opts is None:
            opts = bank_options(a.bank, res["vae"]["replay_footprint"]["bytes"] if relative else None)
        res.update(run_variants({name: dict(replay=kind, replay_opts=dict(opts), **common)}, datafree.distill, out,
                                a.resume, calibrate=reference_speed))
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    plot_runs({k: v["history"] for k, v in res.items()}, results / "mnist_replay.png",
              f"MNIST-5k LeNet-5 -> LeNet-5-half, data-free, {a.budget}, by replay")
    result = {"benchmark": "mnist_replay", "teacher": "lenet5 trained on the MNIST-5k 4,000-digit split",
              "student": "lenet5_half (random init, same seed for every variant)", "budget": a.budget,
              "seed": a.seed, "held_out": "MNIST-5k held-out split, 1,000 digits, evaluated after each round",
              "results": res, "bars": replay_bars(res), "table": markdown_table(res), "machine": machine_info(),
              "command": command_line()}
    atomic_write_text(results / "mnist_replay.json", json.dumps(result, indent=2) + "\n")
    print(result["table"])
    print(json.dumps(result["bars"], indent=2))


if __name__ == "__main__":
    main()
