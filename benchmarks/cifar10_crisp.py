"""Class-aware pruning (CRISP) of ResNet-56 (CIFAR-10, ../shared) for a user's classes, data-free.

    python benchmarks/cifar10_crisp.py            # every variant (~50 min on a 2-core CPU)
    python benchmarks/cifar10_crisp.py --resume   # reuse variants already finished (runs/bench_cifar10_crisp/)
    python benchmarks/cifar10_crisp.py --seed 1   # another draw of classes, images and fine-tuning order

The user's classes are 3 of the 10, drawn with random.Random(seed) (CRISP draws them at random too); the seed
also seeds the inversion and the fine-tuning.  Seed 0 writes cifar10_crisp.json, seed s cifar10_crisp_seed{s}.json.
Every variant prunes the verified ResNet-56 to 2:4 sparsity inside 16x16 blocks, fine-tunes with SR-STE and
KD from the dense model, on the same images: 128 per user class inverted from the model itself (BN
statistics, DeepInversion) - no real image.  Variants:
- ``crisp``: class-aware saliency |W x grad|, block sparsity 0.5 (pruned-layer density ~25 %);
- ``magnitude``: the same pattern, schedule and fine-tuning with |W| saliency (class-agnostic ablation);
- ``crisp_bs0.75``: CRISP at block sparsity 0.75 (density ~12.5 %).
Held-out accuracy (full CIFAR-10 test set, split into the user's classes and the others) is for reporting
only; nothing is chosen by it.  Writes benchmarks/results/cifar10_crisp.json.  Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from datafree.api import machine_info, prune
from datafree.experiments import _git_commit, command_line
from datafree.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VARIANTS = {
    "crisp": {"saliency": "crisp", "block_sparsity": 0.5},
    "magnitude": {"saliency": "magnitude", "block_sparsity": 0.5},
    "crisp_bs0.75": {"saliency": "crisp", "block_sparsity": 0.75},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="draws the user's classes and seeds the runs (default 0)")
    ap.add_argument("--out", help="run dirs (default runs/bench_cifar10_crisp, with _seed{s} for seed s > 0)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--iterations", type=int, default=150, help="fine-tuning iterations per phase")
    ap.add_argument("--images", help="a calib.safetensors of an earlier run of this benchmark: its inverted images "
                    "instead of inverting the model again (they take ~8 min)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark needs ../shared beside the repo (looked in {SHARED})")
    classes = sorted(random.Random(a.seed).sample(range(10), 3))
    suffix = f"_seed{a.seed}" if a.seed else ""
    out = Path(a.out or f"runs/bench_cifar10_crisp{suffix}")
    rows = {}
    data = a.images  # None: the first variant inverts the model; the others reuse its images
    for name in a.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name}; choose from {list(VARIANTS)}")
        run = out / name
        if a.resume and (run / "report.json").is_file():
            rows[name] = json.loads((run / "report.json").read_text())
        else:
            print(f"== {name}", flush=True)
            rows[name] = prune("resnet56", classes=classes, weights=str(SHARED / "models/cifar10/resnet56.pt"),
                               data=data, eval_data=str(SHARED / "data/cifar10/test.npz"), out=str(run), seed=a.seed,
                               iterations=a.iterations, **VARIANTS[name]).report
            rows[name]["commit"] = _git_commit()
            (run / "report.json").write_text(json.dumps(rows[name], indent=2) + "\n")
        data = data or str(run / "calib.safetensors")
    table = ["| variant | user-class acc. (dense) | among user classes (dense) | other classes (dense) | zero weights "
             "| non-zero MACs | compressed size | prune s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        d, p = r["dense"], r["pruned"]
        table.append(f"| {name} | {100 * p['accuracy']:.2f} % ({100 * d['accuracy']:.2f}) | "
                     f"{100 * p['accuracy_among_user_classes']:.2f} % ({100 * d['accuracy_among_user_classes']:.2f}) | "
                     f"{100 * p['accuracy_other_classes']:.2f} % ({100 * d['accuracy_other_classes']:.2f}) | "
                     f"{100 * r['sparsity']['sparsity']:.1f} % | {r['macs']['mac_reduction']:.2f}x fewer | "
                     f"{r['storage']['compression']:.2f}x | {r['prune_s']:.0f} |")
    print("\n".join(table))
    res = {"benchmark": "cifar10_crisp", "model": "resnet56 (../shared/models/cifar10/resnet56.pt)",
           "classes": classes, "seed": a.seed,
           "results": rows,  # each row with the machine that ran it (a resumed row may come from another)
           "table": "\n".join(table), "machine": machine_info(),
           "command": command_line()}
    Path(a.results).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.results) / f"cifar10_crisp{suffix}.json", json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
