"""CIFAR-10 data-free KD benchmark: resnet56 teacher (../shared, 93.39 %) -> fresh resnet20.

    python benchmarks/cifar10_dfkd.py --budget 60m

Writes benchmarks/results/cifar10_dfkd_<budget>.json: last and mean-over-run accuracy on the full
10k test set (evaluated after every round, outside the method clock, never used for selection),
accuracy vs elapsed method seconds, throughput, machine info and the exact command.  Run it with
nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import datafree
from datafree.api import machine_info
from datafree.experiments import _git_commit, command_line
from datafree.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="60m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="run directory (default runs/bench_cifar10_<budget>)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark needs ../shared beside the repo (looked in {SHARED})")
    out = a.out or f"runs/bench_cifar10_{a.budget}"
    t0 = time.time()
    commit = _git_commit()  # the code it runs at, read before a long run
    res = datafree.distill("resnet56", "resnet20", teacher_weights=str(SHARED / "models/cifar10/resnet56.pt"),
                           budget=a.budget, seed=a.seed, eval_data=str(SHARED / "data/cifar10/test.npz"), out=out)
    rep = json.loads((Path(out) / "report.json").read_text())
    s = res.summary
    result = {
        "benchmark": "cifar10_dfkd", "teacher": "resnet56 (../shared/models/cifar10/resnet56.pt)",
        "teacher_accuracy": rep["teacher"]["accuracy"], "student": "resnet20 (random init)",
        "data_used": "none: data-free; test set used only for reporting after each round",
        "budget": a.budget, "seed": a.seed,
        "last_accuracy": rep["student"]["accuracy"], "mean_accuracy": s["mean_accuracy"],
        "var_accuracy": s["var_accuracy"], "max_drawdown": s["max_drawdown"], "rounds": s["rounds"],
        "method_elapsed_s": s["elapsed_s"], "wall_s": time.time() - t0,
        "synthetic_images_per_s": s["synthetic_images_per_s"], "student_images_per_s": s["student_images_per_s"],
        "synthetic_images": s["synthetic_images"], "student_images": s["student_images"],
        "history": [{"round": h["round"], "elapsed_s": h["elapsed_s"], "accuracy": h.get("accuracy"),
                     "kd_loss": h["kd_loss"]} for h in res.history],
        "config": rep["config"], "machine": machine_info(),
        "command": command_line(), "commit": commit,
    }
    Path(a.results).mkdir(parents=True, exist_ok=True)
    path = Path(a.results) / f"cifar10_dfkd_{a.budget}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"last {result['last_accuracy']:.4f} mean {result['mean_accuracy']:.4f} -> {path}")


if __name__ == "__main__":
    main()
