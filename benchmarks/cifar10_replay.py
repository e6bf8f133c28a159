"""Replay against forgetting, CIFAR-10: resnet56 (../shared, 93.39 %) -> fresh resnet20, data-free.

    python benchmarks/cifar10_replay.py --budget 60m            # none, vae, memory-bank: ~3.3 h
    python benchmarks/cifar10_replay.py --budget 60m --resume   # continue / reuse finished variants

Same seed, same wall-clock budget, same synthesizer for each replay strategy:
- ``none``: the student trains on the newest synthetic samples only (the novel window);
- ``vae``: PRE-DFKD generative pseudo replay (no sample stored);
- ``memory-bank``: MB-DFKD with a bank of ``--bank`` bytes; the default ``10x`` is ten times the VAE's
  measured footprint (weights + Adam state + latent pool), the comparison the bar asks for: if the
  VAE's mean-over-run accuracy is at least this bank's, the bank that matches the VAE needs >= 10x its bytes;
- ``vae@encoded``: the VAE's pool holds 4-bit encodings of the stream's own samples, kept by reservoir,
  instead of nudged prior latents, and replays half of each student batch as the bank does (``VAE_PRESETS``;
  558 codes: the default VAE's footprint);
- ``vae@frozen``: as ``vae@encoded``, but the VAE stops learning after 20 % of the budget and its pool fills
  only then, with the bytes its Adam state held: codes decode exactly as they were encoded (837 codes);
- ``vae@frozen2``: as ``vae@frozen`` with 2-bit codes and fp16 cached logits: 1,635 codes in the same bytes;
- ``vae@frozenmix``: as ``vae@frozen``, but every replay decodes a blend of two pool codes and the teacher reads
  it live (no cached logits, so 1,107 codes fit the same bytes);
- ``memory-bank@200000``: the library default, a bank large enough to keep every sample of the run;
- ``memory-bank@336956B``: a bank of that many bytes (here the VAE's own footprint: 106 samples); with two or
  more banks the bars bracket the bank that gives the VAE's mean (``vae_matching_bank``), the bank the
  VAE-bytes bar speaks of;
- ``memory-bank@mix``: the ``--bank`` bank, each replay a pixel blend of two stored samples read by a live teacher
  (no cached logits): the blending of ``vae@frozenmix`` on the bank's side (``vae_vs_blended_bank``); it is kept
  out of ``vae_matching_bank``'s curve of plain banks;
- a ``+ema<decay>`` suffix (``none+ema0.99``) evaluates an EMA of the student's weights (``distill(ema=...)``);
  such a variant is compared with ``none`` of the same suffix.
Held-out accuracy (the full 10k test set) is measured after every round outside the method clock and
selects nothing.  Each finished variant is kept in benchmarks/results/cifar10_replay/<variant>.json (with
its commit and the machine's measured reference speed) and reused by ``--resume`` in a later sitting -
the bars hold only among variants that ran at the same speed; writes benchmarks/results/cifar10_replay.json
and cifar10_replay.png.  Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datafree
from datafree.api import distill_config, machine_info
from datafree.experiments import bank_options, command_line, markdown_table, reference_speed, replay_bars, run_variants
from datafree.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
# vae@<preset>: VAE replay options; the pool is sized so the footprint stays the default VAE's (336,956 B with the
# resnet56 teacher's cached logits): 558 codes of 344 B (4-bit codes) against 320 of 600 B (8-bit)
# frozen: the VAE learns the stream (8 steps per batch) for the first 20 % of the budget, then stops; its Adam
# state (96,128 B) makes way for a pool of 837 codes (287,928 B): 48,828 + max(96,128, 287,928) = 336,756 B
# frozen2: as frozen, with 2-bit (Lloyd-Max) codes and fp16 cached logits, 176 B a code: 1,635 codes (287,760 B)
# in the same bytes, twice as many replays at a coarser code: 48,828 + 287,760 = 336,588 B
VAE_PRESETS = {"encoded": {"codes": "encoded", "code_bits": 4, "pool": 558, "ratio": 0.5},
               "frozen": {"codes": "encoded", "code_bits": 4, "pool": 837, "ratio": 0.5, "freeze": 0.2, "steps": 8}}
VAE_PRESETS["frozen2"] = {**VAE_PRESETS["frozen"], "code_bits": 2, "logit_dtype": "float16", "pool": 1635}
# frozenmix: as frozen, but each replay decodes a blend of two codes (lam ~ Beta(1, 1)) read by a live teacher pass:
# no cached logits, 260 B a code, 1,107 codes (287,820 B): 48,828 + max(96,128, 287,820) = 336,648 B
VAE_PRESETS["frozenmix"] = {**VAE_PRESETS["frozen"], "mix": 1.0, "pool": 1107}
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="60m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bank", default="10x", help="bank size: '10x' (times the VAE's footprint), '40MB' or samples")
    ap.add_argument("--variants", default="none,vae,memory-bank,memory-bank@200000",
                    help="comma-separated; memory-bank@N is a bank of N samples (200000: every sample of the run), "
                    "memory-bank@336956B one of that many bytes, memory-bank@mix the --bank bank replaying "
                    "pixel blends; "
                    "a +ema<decay> suffix (none+ema0.99) evaluates an EMA of the student's weights")
    ap.add_argument("--out", default="runs/bench_cifar10_replay")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted variant, reuse finished ones")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark needs ../shared beside the repo (looked in {SHARED})")
    common = dict(teacher="resnet56", student="resnet20", teacher_weights=str(SHARED / "models/cifar10/resnet56.pt"),
                  budget=a.budget, seed=a.seed, eval_data=str(SHARED / "data/cifar10/test.npz"))
    names = a.variants.split(",")
    res: dict[str, dict] = {}
    for name in names:  # one at a time: the bank's size may depend on the VAE's measured footprint
        base, _, ema = name.partition("+ema")  # none+ema0.99: an EMA of the student's weights, decay 0.99
        kind, _, size = base.partition("@")  # memory-bank@200000: a bank of that many samples
        opts: dict = {}
        if kind == "memory-bank":
            vae = next((res[v]["replay_footprint"]["bytes"] for v in ("vae", f"vae+ema{ema}") if v in res), None)
            opts = bank_options(a.bank if size in ("", "mix") else size, vae)
            if size == "mix":  # memory-bank@mix: the --bank bank replaying pixel blends, read by a live teacher
                opts["mix"] = 1.0
        elif kind == "vae" and size:
            if size not in VAE_PRESETS:
                sys.exit(f"unknown vae preset '{size}' in --variants; known: {', '.join(VAE_PRESETS)}")
            opts = dict(VAE_PRESETS[size])
        extra = {"ema": float(ema)} if ema else {}
        res.update(run_variants({name: dict(replay=kind, replay_opts=opts, **common, **extra)}, datafree.distill, a.out,
                                a.resume, keep=Path(a.results) / "cifar10_replay", calibrate=reference_speed,
                                resolve=distill_config))
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    from datafree.report import plot_runs

    plot_runs({k: v["history"] for k, v in res.items()}, out / "cifar10_replay.png",
              f"CIFAR-10 resnet56 -> resnet20, data-free, {a.budget}, by replay")
    result = {"benchmark": "cifar10_replay", "teacher": "resnet56 (../shared/models/cifar10/resnet56.pt)",
              "student": "resnet20 (random init, same seed for every variant)", "budget": a.budget, "seed": a.seed,
              "data_used": "none: data-free; the test set is only evaluated after each round, outside the clock",
              "results": res, "bars": replay_bars(res), "table": markdown_table(res), "machine": machine_info(),
              "command": command_line()}
    atomic_write_text(out / "cifar10_replay.json", json.dumps(result, indent=2) + "\n")
    print(result["table"])
    print(json.dumps(result["bars"], indent=2))


if __name__ == "__main__":
    main()
