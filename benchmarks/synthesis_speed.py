"""How long one inversion call takes with the BN-statistics loss fused by torch.compile and without.

    python benchmarks/synthesis_speed.py             # ~3 min: resnet56 teacher (../shared), resnet20 student

Two identical set-ups (a copy of the verified CIFAR-10 resnet56 each, float32 or bf16 as ``auto`` picks,
channels_last, the distiller's defaults) differ only in ``TeacherInverter(fused=...)``. Calls alternate between
them, so a machine whose speed drifts slows both alike. Timed: a generator synthesis call (64 images, 5
generator steps, the adversarial term against a fresh resnet20) and the VAE replay's nudging of 32 latents
(5 steps). Both inverters score the same batch first; their BN losses must agree (relative 1e-5). Writes
benchmarks/results/synthesis_speed.json. Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from datafree.api import machine_info
from datafree.experiments import _git_commit, command_line, reference_speed
from datafree.io.atomic import atomic_write_text
from datafree.models import create_model, load_weights, model_meta
from datafree.replay.base import ReplayContext
from datafree.replay.vae import VAEReplay, VAEReplayConfig
from datafree.synthesis import build_synthesizer, make_config
from datafree.synthesis.base import TeacherInverter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def setup(teacher: torch.nn.Module, fused: bool) -> dict:
    torch.manual_seed(0)
    meta = model_meta(teacher)
    inv = TeacherInverter(copy.deepcopy(teacher), meta.num_classes, meta.mean, meta.std, bn_momentum=0.9,
                          channels_last=True, fused=fused)
    syn = build_synthesizer("generator", make_config("generator"), inv, meta.input_shape)
    vae = VAEReplay(VAEReplayConfig(), ReplayContext(inv, meta.input_shape, meta.num_classes, True))
    return {"inv": inv, "synth": syn, "vae": vae}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=8, help="timed calls per set-up and task")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "synthesis_speed.json"))
    args = ap.parse_args()
    weights = SHARED / "models" / "cifar10" / "resnet56.pt"
    if not weights.is_file():
        sys.exit(f"synthesis_speed: error: {weights} not found; this benchmark needs ../shared")
    speed = reference_speed()
    teacher = load_weights(create_model("resnet56"), weights).to(memory_format=torch.channels_last)
    student = create_model("resnet20").to(memory_format=torch.channels_last)
    runs = {"eager": setup(teacher, False), "fused": setup(teacher, True)}

    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    losses = {}
    for name, r in runs.items():  # the same batch through both: also compiles the fused term
        with r["inv"].inverting(momentum=0.0):
            r["inv"].logits(x.clone().requires_grad_(True))
            losses[name] = float(r["inv"].bn_loss().detach())

    tasks = {"generator_call_64": lambda r: r["synth"].synthesize(student, adversarial=True),
             "vae_nudge_32": lambda r: r["vae"].nudge(32)}
    times: dict[str, dict[str, list[float]]] = {t: {n: [] for n in runs} for t in tasks}
    for task, fn in tasks.items():
        for r in runs.values():  # warm-up: the first call of each shape and grad mode compiles
            fn(r)
        for _ in range(args.calls):
            for name, r in runs.items():
                t0 = time.perf_counter()
                fn(r)
                times[task][name].append(time.perf_counter() - t0)

    rows = {}
    for task, by in times.items():
        med = {n: statistics.median(v) for n, v in by.items()}
        rows[task] = {"median_s": med, "calls_s": by, "time_saved": 1 - med["fused"] / med["eager"]}
        print(f"{task}: eager {med['eager']:.3f} s, fused {med['fused']:.3f} s per call "
              f"({100 * rows[task]['time_saved']:.1f} % less time)")
    result = {"benchmark": "synthesis_speed", "teacher": "resnet56", "student": "resnet20",
              "bn_loss": losses, "bn_loss_rel_diff": abs(losses["fused"] - losses["eager"]) / losses["eager"],
              "bf16": runs["fused"]["inv"].bf16, "results": rows, "machine": machine_info(),
              "machine_speed": speed, "threads": torch.get_num_threads(), "commit": _git_commit(),
              "command": command_line()}
    print(f"BN loss on one batch: eager {losses['eager']:.6f}, fused {losses['fused']:.6f}")
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    if result["bn_loss_rel_diff"] > 1e-5:
        sys.exit(f"synthesis_speed: error: the fused BN loss differs from the eager one by a relative "
                 f"{result['bn_loss_rel_diff']:.1e}; the fused term is wrong on this machine (DATAFREE_COMPILE=0)")


if __name__ == "__main__":
    main()
