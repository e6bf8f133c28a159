"""How fast datafree runs beside another CPU-bound process, for each OpenMP spin setting (``datafree.omp``).

    python benchmarks/contention.py        # ~20 min: needs ../shared (the resnet56 teacher)

For each setting - libgomp's default spin (300,000 iterations, given explicitly: datafree would otherwise set
its own), datafree's 30,000, 10,000 and ``OMP_WAIT_POLICY=passive`` - two measurements, each in fresh processes
(libgomp reads its environment once, when it loads):
- *task*: a 3-round distill (resnet56 -> resnet20, ``--kd-steps 10 --synth-every 5 --batch-size 64``; not
  ``--deterministic``, which runs one thread), three times on the idle machine (the settings alternating) and
  once beside a ``while True`` Python process: the distill's wall-clock (report.json ``elapsed_s``) and its KD
  losses (``kd_paths``: how many distinct loss sequences the runs of a setting took - two threads take another
  path in a few processes of a hundred, whatever the setting; ``datafree.distill.engine.Distiller.run_loop``);
- *idle cost* in finer grain: one generator synthesis call (64 images, eager BN term) and three resnet20 steps
  on 256 images, medians of six after two warm-ups, in three processes per setting, the settings alternating.
Writes benchmarks/results/contention.json.  The only load must be the one this script adds: run it with
nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datafree.omp import SPIN_VARS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TEACHER = SHARED / "models" / "cifar10" / "resnet56.pt"
SETTINGS = {"libgomp default": {"GOMP_SPINCOUNT": "300000"}, "datafree (30000)": {"GOMP_SPINCOUNT": "30000"},
            "10000": {"GOMP_SPINCOUNT": "10000"}, "passive": {"OMP_WAIT_POLICY": "passive"}}


def env_for(setting: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SPIN_VARS}
    return {**env, **setting, "DATAFREE_COMPILE": "0"}  # the eager BN term: no compile time in the timings


def worker() -> None:
    """The idle-cost timing, in this process (its spin setting came with its environment)."""
    import torch
    from synthesis_speed import setup  # the script beside this one (on sys.path as the script's folder)

    from datafree.models import create_model, load_weights

    torch.manual_seed(0)
    teacher = load_weights(create_model("resnet56"), TEACHER).to(memory_format=torch.channels_last)
    student = create_model("resnet20").to(memory_format=torch.channels_last)
    r = setup(teacher, fused=False)
    inv, syn = r["inv"], r["synth"]
    opt = torch.optim.SGD(student.parameters(), 0.01)
    x = torch.rand(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def student_steps() -> None:
        for _ in range(3):
            with inv.autocast():
                loss = student(x).float().square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    synth, steps = [], []
    for i in range(8):
        t0 = time.perf_counter()
        syn.synthesize(student, adversarial=True)
        t1 = time.perf_counter()
        student_steps()
        if i >= 2:  # two warm-ups
            synth.append(t1 - t0)
            steps.append(time.perf_counter() - t1)
    print(json.dumps({"synthesis_call_s": statistics.median(synth), "student_3_steps_s": statistics.median(steps)}))


def task(setting: dict, out: Path, loaded: bool) -> dict:
    """One 3-round distill in a fresh process, beside a busy process if ``loaded``."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        cmd = [sys.executable, "-m", "datafree", "distill", "--teacher", "resnet56", "--teacher-weights", str(TEACHER),
               "--student", "resnet20", "--rounds", "3", "--kd-steps", "10", "--synth-every", "5", "--batch-size",
               "64", "--out", str(out), "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env_for(setting), check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    rep = json.loads((out / "report.json").read_text())
    losses = [json.loads(line)["kd_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"elapsed_s": rep["student"]["elapsed_s"], "process_s": wall, "kd_losses": losses,
            "omp_spin": rep["machine"]["omp_spin"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "contention.json"))
    a = ap.parse_args()
    if not TEACHER.is_file():
        sys.exit(f"contention: error: {TEACHER} not found; this benchmark needs ../shared")
    if a.worker:
        return worker()
    from datafree.experiments import _git_commit, command_line
    from datafree.io.atomic import atomic_write_text
    from datafree.machine import machine_info

    cost: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(3):  # the settings alternate, so a drifting machine slows all alike
        for name, setting in SETTINGS.items():
            done = subprocess.run([sys.executable, __file__, "--worker"], env=env_for(setting), check=True,
                                  capture_output=True, text=True)
            cost[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(name, cost[name][-1], flush=True)
    tasks: dict[str, dict] = {name: {"idle": []} for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(3):  # idle runs alternate too
            for j, (name, setting) in enumerate(SETTINGS.items()):
                tasks[name]["idle"].append(task(setting, Path(tmp) / f"{j}_idle{i}", False))
        for j, (name, setting) in enumerate(SETTINGS.items()):
            t = tasks[name]
            t["loaded"] = task(setting, Path(tmp) / f"{j}_loaded", True)
            t["idle_median_s"] = statistics.median(r["elapsed_s"] for r in t["idle"])
            t["loaded_s"] = t["loaded"]["elapsed_s"]
            print(name, "idle", [round(r["elapsed_s"], 1) for r in t["idle"]], "loaded", round(t["loaded_s"], 1),
                  flush=True)
    base = cost["libgomp default"]
    summary = {}
    for name in SETTINGS:
        med = {k: statistics.median(r[k] for r in cost[name]) for k in ("synthesis_call_s", "student_3_steps_s")}
        ref = {k: statistics.median(r[k] for r in base) for k in med}
        summary[name] = {**med, **{f"{k}_vs_default": med[k] / ref[k] for k in med},
                         "task_idle_s": tasks[name]["idle_median_s"], "task_loaded_s": tasks[name]["loaded_s"],
                         "kd_paths": len({tuple(r["kd_losses"]) for r in [*tasks[name]["idle"],
                                                                           tasks[name]["loaded"]]})}
    result = {"benchmark": "contention", "settings": SETTINGS, "summary": summary, "idle_cost": cost, "tasks": tasks,
              "machine": machine_info(), "commit": _git_commit(), "command": command_line()}
    atomic_write_text(Path(a.out), json.dumps(result, indent=1))
    for name, s in summary.items():
        print(f"{name:18s} synthesis x{s['synthesis_call_s_vs_default']:.3f}  "
              f"student x{s['student_3_steps_s_vs_default']:.3f}"
              f"  3-round distill idle {s['task_idle_s']:.1f} s, beside a busy process {s['task_loaded_s']:.1f} s"
              f"  ({s['kd_paths']} loss path(s))")


if __name__ == "__main__":
    main()
