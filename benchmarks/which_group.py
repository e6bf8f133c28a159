"""Which committed benchmark group can this machine add rows to?

    DATAFREE_COMPILE=0 python benchmarks/which_group.py            # a 4-minute plain probe, then the groups
    python benchmarks/which_group.py --rate 10.4                   # the synthesis rate known: no probe

A 60-minute benchmark row is compared only with rows that synthesized at the same rate (``comparable``:
max <= 1.15 x min over a group, and the same eager / fused BN-statistics code path), and sittings land on
machines up to 4x apart.  This script measures the machine the way the rows are judged - the synthesis rate
of the benchmarks' ``plain`` configuration (resnet56 -> resnet20, memory bank of 200,000 samples), no
held-out data - and prints, for every committed group (``benchmarks/results/**/<benchmark>.json``), the
rates its rows ran at, the window a new row must fall in (``rate_window``) and the command that continues
it.  A probe is a spot check: a guided variant synthesizes 5-10 % slower than plain (its discriminator update),
and a noisy machine moves more (the cpu5 group's: plain probe 5.68, a 4-minute mix 4.40, the guided hour 4.30
images/s); leave a margin at a window's edges, or probe twice.  Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import datafree
from datafree.experiments import rate_window

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def groups(results: Path) -> list[dict]:
    """Each committed benchmark JSON with a synthesis-rate group: its rows' rates, code path and command."""
    out = []
    for f in sorted(results.rglob("*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        g = (((d.get("bars") or {}).get("same_machine_speed") or {}).get("groups") or {}).get(
            "synthetic_images_per_s") if isinstance(d, dict) else None
        if not g or not g.get("rates") or not str(d.get("teacher", "")).startswith("resnet56"):
            continue  # the probe measures the CIFAR-10 resnet56 -> resnet20 benchmarks' work only
        fused = set((g.get("fused_bn_stats") or {}).values()) or {False}  # groups from before the flag: eager
        out.append({"file": str(f.relative_to(results)), "rates": g["rates"], "fused": fused,
                    "window": rate_window(list(g["rates"].values())), "command": d.get("command", "")})
    return out


def probe(budget: str, out: str) -> tuple[float, bool]:
    """The synthesis rate and code path of the ``plain`` benchmark configuration on this machine."""
    if not SHARED.is_dir():
        sys.exit(f"the probe needs ../shared beside the repo (looked in {SHARED}); or pass --rate")
    shutil.rmtree(out, ignore_errors=True)  # a probe is always fresh: distill refuses a directory holding a run
    datafree.distill(teacher="resnet56", student="resnet20", teacher_weights=str(SHARED / "models/cifar10/resnet56.pt"),
                     budget=budget, seed=0, replay="memory-bank", replay_opts={"capacity": 200000}, out=out)
    rep = json.loads((Path(out) / "report.json").read_text())
    return float(rep["student"]["synthetic_images_per_s"]), bool(rep["machine"].get("fused_bn_stats", False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, help="this machine's synthesis rate (images/s), if known: no probe")
    ap.add_argument("--fused", action="store_true", help="with --rate: the rate is of the fused BN-statistics path")
    ap.add_argument("--budget", default="4m", help="the probe's wall-clock budget")
    ap.add_argument("--out", default="runs/which_group")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    rate, fused = (a.rate, a.fused) if a.rate else probe(a.budget, a.out)
    print(f"this machine: {rate:.2f} synthetic images/s ({'fused' if fused else 'eager'} BN-statistics path)")
    fits = []
    for g in groups(Path(a.results)):
        lo, hi = g["window"]
        rates = ", ".join(f"{k} {v:.2f}" for k, v in g["rates"].items())
        same_path = g["fused"] == {fused}
        ok = same_path and lo <= rate <= hi
        why = ("fits" if ok else "other code path" if not same_path else "its rows disagree" if lo > hi
               else "too slow" if rate < lo else "too fast")
        print(f"- {g['file']}: rows {rates}; a new row needs {lo:.2f}-{hi:.2f}: {why}")
        if ok:
            fits.append(g)
    for g in fits:
        print(f"  continue {g['file']} (add the variants it lacks to --variants): DATAFREE_COMPILE={int(fused)} "
              f"{g['command']}")
        kept = (Path(a.results) / g["file"]).parent / "cifar10_condensed"
        if g["file"].endswith("cifar10_condensed.json") and not list(kept.glob("condensed_ipc*.npz")):
            print(f"  first copy benchmarks/results/cifar10_condensed/condensed_ipc{{1,10}}.{{npz,json}} to {kept}: "
                  "the groups read the same condensed sets (without them the benchmark condenses anew, 25 min each)")
    if not fits:
        print("no committed group takes rows from this machine: its rows would start a group of their own")


if __name__ == "__main__":
    main()
