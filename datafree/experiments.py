"""Side-by-side runs of ``distill`` variants under one protocol (the benchmarks' engine).

``run_variants`` runs each named variant into ``out_root/<name>`` (continuing an interrupted one from
its checkpoint with ``resume=True``, reusing a finished one), then collects per variant the summary
over the run (last / mean / variance / max drawdown of held-out accuracy), the replay footprint, the
time split and the accuracy history, and draws all accuracy curves in one PNG.

A 60-minute benchmark of four variants outlasts one sitting, and run directories do not travel with the
repository; ``keep`` names a (committed) folder where each finished variant's row is written as
``<name>.json``, with the commit it ran at, so that a later ``resume`` reuses it instead of rerunning
(from any checkout: paths in the kept configuration are relative to the checkout, see ``same_config``).
Sittings can land on machines of different speed (measured here: 2.3x apart), which a wall-clock budget
turns into different amounts of work; ``calibrate`` (e.g. ``reference_speed``) is measured before each
variant and kept in its row, and ``comparable`` tells whether a set of rows ran at the same speed.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from datafree.io.atomic import atomic_write_text
from datafree.io.budget import parse_bytes
from datafree.report import plot_runs

SUMMARY_KEYS = ("mean_accuracy", "var_accuracy", "max_drawdown", "evaluations", "rounds", "elapsed_s",
                "synthetic_images", "student_images", "replayed_images", "synthetic_images_per_s",
                "student_images_per_s", "replay", "replay_footprint", "novel_window", "time_split_s",
                "collapse_rounds")


def read_run(out: str | Path) -> dict:
    """The finished run in ``out`` as a result row: report summary plus the per-round history."""
    out = Path(out)
    rep = json.loads((out / "report.json").read_text())
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines() if s.strip()]
    s = rep["student"]
    return {"last_accuracy": s.get("accuracy"), **{k: s.get(k) for k in SUMMARY_KEYS if k in s},
            "teacher_accuracy": rep["teacher"].get("accuracy"), "data_used": rep.get("data_used"),
            "run_dir": str(out), "config": rep.get("config"), "wall_s": rep.get("wall_s"),
            "machine": rep.get("machine"),
            "history": [{"round": r["round"], "elapsed_s": r["elapsed_s"], "accuracy": r.get("accuracy"),
                         "kd_loss": r["kd_loss"]} for r in rows]}


def run_variants(variants: dict[str, dict], run: Callable[..., object], out_root: str | Path,
                 resume: bool = False, plot: str | Path | None = None, title: str = "",
                 keep: str | Path | None = None, calibrate: Callable[[], float] | None = None,
                 resolve: Callable[..., dict] | None = None) -> dict[str, dict]:
    """Run ``run(out=..., resume=..., **kwargs)`` for each ``name -> kwargs`` and collect the results.

    With ``keep``, each finished variant's row is also written to ``keep/<name>.json``; with ``resume``, a
    variant that has no finished run directory but a kept row of the same configuration is reused from it:
    the same ``kwargs`` and, with ``resolve`` (``kwargs -> resolved method configs``, e.g.
    ``datafree.api.distill_config``), no default changed since (``changed_defaults``).
    """
    out_root = Path(out_root)
    results = {}
    for name, kwargs in variants.items():
        out = out_root / name
        kept = Path(keep) / f"{name}.json" if keep else None
        done = (out / "report.json").is_file() and (out / "student.safetensors").is_file()
        reused = resume and done  # a finished run directory: read, not run again
        prev = json.loads(kept.read_text()) if kept is not None and kept.is_file() else None
        if resume and not done and prev is not None:
            changed = changed_defaults(prev.get("config"), portable_config(resolve(**kwargs))) if resolve else []
            if same_config(prev.get("kwargs"), portable_config(kwargs)) and not changed:
                print(f"== {name}: finished run kept in {kept} (commit {prev.get('commit')}), reused", flush=True)
                results[name] = prev
                continue
            why = f" (defaults changed since: {'; '.join(changed[:3])})" if changed else ""
            print(f"== {name}: {kept} ran another configuration{why}; running again", flush=True)
        speed = None
        if not reused:
            if calibrate is not None:
                speed = calibrate()
                print(f"== {name} (machine speed: {speed:.0f} reference images/s)", flush=True)
            else:
                print(f"== {name}", flush=True)
            cont = resume and (out / "checkpoint" / "state.pt").is_file()
            if not cont and out.is_dir():  # a variant run afresh replaces its earlier run directory
                shutil.rmtree(out)
            run(out=str(out), resume=cont, **kwargs)
        else:
            print(f"== {name}: finished run found in {out}, reused", flush=True)
        if speed is None and prev is not None:  # reused run dir: keep the speed measured then
            speed = prev.get("machine_speed")
        results[name] = {**read_run(out), "machine_speed": speed}
        if kept is not None:
            commit = prev.get("commit") if reused and prev is not None else _git_commit()  # the commit it ran at
            row = {**results[name], "kwargs": portable_config(kwargs), "commit": commit}
            kept.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(kept, json.dumps(row, indent=1) + "\n")
            results[name] = row
    if plot:
        plot_runs({k: v["history"] for k, v in results.items()}, plot, title or "held-out accuracy over the run")
    return results


def reference_speed(seconds: float = 8.0) -> float:
    """Images per second of a fixed workload - resnet20 training steps on 128 random 32x32 images under
    channels_last and, where the engine turns it on (``bf16="auto"``, datafree.precision), bf16 autocast, as the
    engine runs them - to tell a slower machine from a worse method."""
    import torch

    from datafree.models import create_model
    from datafree.precision import bf16_fast

    bf16 = bf16_fast()

    torch.manual_seed(0)
    model = create_model("resnet20", 10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    speeds = []
    for _ in range(3):  # the median of three spells: one spell alone varied by 10 % here
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            step()
            n += 1
        speeds.append(n * len(x) / (time.perf_counter() - t0))
    return sorted(speeds)[1]


def comparable(rows: dict[str, dict], tolerance: float = 0.15) -> dict:
    """Whether the rows ran on machines of the same speed - the condition for comparing wall-clock-budget
    results.  Each row is judged by the whole-run rate of the work it did: rows that synthesized by their
    synthesis rate, rows that only trained a student (condensed-only) by their student rate; rows of one
    kind must agree within ``tolerance``.  Rows with neither fall back to the reference speed measured just
    before the run (an 8-second spot check, noisy: it read 300 and 406 images/s before two runs whose
    student rates agreed within 0.4 %).  A row with no measure at all makes the answer unknown (None).
    Rows of different kinds cannot be compared by rate; their spot speeds stay in the output to read.
    Rows that synthesized must also have run the same inversion code path: the fused BN-statistics term
    (``machine.fused_bn_stats``; rows from before it ran eager) makes synthesis 8-14 % faster on the same machine,
    so a rate within tolerance does not make such rows comparable."""
    speeds = {k: r.get("machine_speed") for k, r in rows.items()}
    kinds: dict[str, dict[str, float | None]] = {}
    for k, r in rows.items():
        basis = next((b for b in ("synthetic_images_per_s", "student_images_per_s") if r.get(b)), "machine_speed")
        kinds.setdefault(basis, {})[k] = r.get(basis)
    groups = {}
    for basis, rates in kinds.items():
        known = [v for v in rates.values() if v]
        groups[basis] = {"rates": rates, "met": None if len(known) < len(rates) else
                         max(known) <= (1 + tolerance) * min(known)}
        if basis == "synthetic_images_per_s":
            fused = {k: bool((rows[k].get("machine") or {}).get("fused_bn_stats", False)) for k in rates}
            groups[basis]["fused_bn_stats"] = fused
            if len(set(fused.values())) > 1:
                groups[basis]["met"] = False
    met = [g["met"] for g in groups.values()]
    return {"machine_speed": speeds, "tolerance": tolerance, "groups": groups,
            "scope": "met: every group's rows agree in rate; rows of different groups are not compared by rate",
            "met": None if None in met else all(met)}


def rate_window(rates: list[float | None], tolerance: float = 0.15) -> tuple[float, float]:
    """The rates a new row may run at and leave ``comparable`` met beside rows of ``rates``: all must keep
    max <= (1 + tolerance) * min, so [max / (1 + tolerance), (1 + tolerance) * min]; any rate with no rows, and
    none (an empty window, lo > hi) when the rows already disagree."""
    known = [float(r) for r in rates if r]
    if not known:
        return 0.0, math.inf
    if max(known) > (1 + tolerance) * min(known):
        return math.inf, 0.0
    return max(known) / (1 + tolerance), (1 + tolerance) * min(known)


_ROOT = Path(__file__).resolve().parents[1]


def portable_config(x: object, root: Path = _ROOT) -> object:
    """``x`` as it reads back from JSON (tuples become lists), with absolute paths made relative to the
    checkout ``root`` (``benchmarks/...``, ``../shared/...``) so that a kept row matches from any checkout."""

    def rel(v: object) -> object:
        if isinstance(v, dict):
            return {k: rel(u) for k, u in v.items()}
        if isinstance(v, list):
            return [rel(u) for u in v]
        return os.path.relpath(v, root) if isinstance(v, str) and os.path.isabs(v) else v

    return rel(json.loads(json.dumps(x, default=str)))


def same_config(kept: object, now: object) -> bool:
    """Whether a kept row's ``kwargs`` equal ``now`` (portable form).  Rows kept before paths were stored
    relative hold absolute paths of the checkout that ran them: such a path matches a relative one it ends
    with (``/work/wt/benchmarks/x.npz`` ~ ``benchmarks/x.npz``; ``/work/shared/m.pt`` ~ ``../shared/m.pt``)."""
    if isinstance(kept, dict) and isinstance(now, dict):
        return kept.keys() == now.keys() and all(same_config(kept[k], now[k]) for k in kept)
    if isinstance(kept, list) and isinstance(now, list):
        return len(kept) == len(now) and all(same_config(a, b) for a, b in zip(kept, now))
    if isinstance(kept, str) and isinstance(now, str) and os.path.isabs(kept) and not os.path.isabs(now):
        tail = Path(now).parts
        tail = tail[next((i for i, p in enumerate(tail) if p != ".."), len(tail)):]
        return bool(tail) and Path(kept).parts[-len(tail):] == tail
    return kept == now


_MACHINE_RESOLVED = {"bf16", "novel_window"}  # resolved per machine or from other settings: not a method default


def changed_defaults(kept: dict | None, now: dict) -> list[str]:
    """The settings (``section.key: kept -> now``) where a kept row's resolved configs (its ``config``) differ
    from what the same arguments resolve to now - a default that changed since the row ran (the VAE's pool
    size, say) makes the row another configuration, and so does a setting it held that is gone now (a design
    replaced).  A setting added since, with a default that keeps the old behaviour, is no change; a row without
    configs has nothing to compare."""
    out = []
    for section, cfg in now.items():
        old = (kept or {}).get(section)
        if isinstance(old, dict) and isinstance(cfg, dict):
            keys = sorted(old.keys() & cfg.keys() - _MACHINE_RESOLVED)
            out += [f"{section}.{k}: {old[k]!r} -> {cfg[k]!r}" for k in keys if not same_config(old[k], cfg[k])]
            out += [f"{section}.{k}: {old[k]!r} -> no such setting now" for k in sorted(old.keys() - cfg.keys())]
    return out


# What a benchmark writes itself (its tables, kept rows and plots): a change there is an output, not code.
# Inputs kept beside them (our condensed sets, .npz) still count.
_OUTPUTS = [f":(top,exclude,glob)benchmarks/results/**/*.{ext}" for ext in ("json", "png", "md")]


def _git_commit(here: Path | None = None) -> str | None:
    """The commit the code ran at (``-dirty`` with uncommitted changes to tracked files other than the
    benchmarks' own result files), or None outside a git checkout."""
    here = here or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *_OUTPUTS],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran a benchmark, as a shell line a reader can paste (``sys.argv`` by default)."""
    return "python " + shlex.join(sys.argv if argv is None else argv)


def save_proxy_rows(path: str | Path, benchmark: str, budget: str, rows: dict[str, dict], proxy: str,
                    argv: list[str]) -> dict:
    """Write a benchmark that compares settings on a data-free proxy (``proxy_agreement_on_inverted`` per row):
    the rows, the best by the proxy, what the proxy is, the machine and the command; atomically."""
    from datafree.api import machine_info

    result = {"benchmark": benchmark, "budget": budget, "seed": 0, "rows": rows,
              "best_by_proxy": max(rows, key=lambda k: rows[k]["proxy_agreement_on_inverted"]), "proxy": proxy,
              "machine": machine_info(), "command": command_line(argv)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return result


BANK_SLACK = 4096  # bytes a bank sized as a multiple of the VAE gets on top: about one sample


def bank_options(size: str, vae_bytes: int | None = None) -> dict:
    """Memory-bank options for a size given as samples ("200000"), bytes ("40MB", "3470936B") or a multiple of the VAE's
    measured footprint ("10x"; one sample of slack so that the bank holds at least that many bytes)."""
    if size.endswith("x"):
        if vae_bytes is None:
            raise ValueError("a bank sized relative to the VAE needs the VAE's footprint (run the vae variant first)")
        return {"capacity_bytes": math.ceil(float(size[:-1]) * vae_bytes) + BANK_SLACK}
    if size.isdigit():
        return {"capacity": int(size)}
    return {"capacity_bytes": parse_bytes(size)}  # "3470936B" -> 3470936: the form a kept row stores


def markdown_table(results: dict[str, dict]) -> str:
    lines = ["| variant | last | mean over run | variance (pt²) | max drawdown | evaluations | replay bytes "
             "| machine speed (ref. img/s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        fp = (r.get("replay_footprint") or {}).get("bytes", 0)
        speed = f"{r['machine_speed']:.0f}" if r.get("machine_speed") else "not measured"
        lines.append(f"| {name} | {100 * r['last_accuracy']:.2f} % | {100 * r['mean_accuracy']:.2f} % | "
                     f"{1e4 * r['var_accuracy']:.1f} | {100 * r['max_drawdown']:.2f} pt | {r.get('evaluations')} | "
                     f"{fp:,} | {speed} |")
    return "\n".join(lines)


VOID = "replayed no sample within the budget: the row measures the replay's upkeep, not replay; run longer"


def replay_bars(res: dict[str, dict]) -> dict:
    """The replay bars on measured results: each replay kind against ``none`` (mean-over-run gain >= 2
    points, max drawdown at most half, last not below), and the VAE's bytes against the bank's; they hold
    only if every variant ran at the same machine speed (``same_machine_speed``).  A variant named with a
    suffix (``vae+ema0.99``) is compared with ``none`` of the same suffix.  A variant that replayed no sample
    gets no verdict, only ``void`` (``VOID``): it says nothing about replay."""
    bars: dict = {"same_machine_speed": comparable(res)}

    def suffix(name: str) -> str:  # "vae+ema0.99" -> "+ema0.99"
        return "".join(name.partition("+")[1:])

    def kind(name: str) -> str:  # "vae@encoded+ema0.99" -> "vae"
        return name.partition("+")[0].partition("@")[0]

    for k, r in res.items():
        none = res.get("none" + suffix(k))
        if none is None or k == "none" + suffix(k):
            continue
        gain = 100 * (r["mean_accuracy"] - none["mean_accuracy"])
        if r.get("replayed_images") == 0:  # e.g. a VAE that never reached min_updates in the budget
            bars[k] = {"mean_gain_pt": gain, "void": VOID}
            continue
        bars[k] = {"mean_gain_pt": gain,
                   "mean_gain_ge_2pt": r["mean_accuracy"] - none["mean_accuracy"] >= 0.02,
                   "drawdown_at_most_half": r["max_drawdown"] <= 0.5 * none["max_drawdown"],
                   "last_not_below_none": r["last_accuracy"] >= none["last_accuracy"]}
    for name, vae in res.items():  # vae, vae@encoded, vae+ema0.99, ... against the banks of the same suffix
        if kind(name) != "vae":
            continue
        void = vae.get("replayed_images") == 0
        bank = res.get("memory-bank" + suffix(name))
        if bank is not None:
            vb, bb = vae["replay_footprint"]["bytes"], bank["replay_footprint"]["capacity_bytes"]
            key = "vae_vs_bank" + name[3:]
            bars[key] = {
                "vae_bytes": vb, "vae_weights_bytes": vae["replay_footprint"]["weights_bytes"],
                "bank_capacity_bytes": bb, "bank_bytes_used": bank["replay_footprint"]["bytes"],
                "bank_over_vae_bytes": bb / vb, "vae_mean_ge_bank_mean": vae["mean_accuracy"] >= bank["mean_accuracy"]}
            if void:
                bars[key].update(vae_mean_ge_bank_mean=None, void=VOID)
        blended = res.get("memory-bank@mix" + suffix(name))  # the bank with the VAE's blending (live teacher)
        if blended is not None and not void:
            bars["vae_vs_blended_bank" + name[3:]] = {
                "vae_bytes": vae["replay_footprint"]["bytes"], "vae_mean": vae["mean_accuracy"],
                "bank_capacity_bytes": blended["replay_footprint"]["capacity_bytes"],
                "bank_mean": blended["mean_accuracy"],
                "vae_mean_ge_bank_mean": vae["mean_accuracy"] >= blended["mean_accuracy"]}
        banks = {k: r for k, r in res.items()  # the curve of plain banks: a blended one is another method
                 if kind(k) == "memory-bank" and suffix(k) == suffix(name) and not k.startswith("memory-bank@mix")}
        if len(banks) > 1 and not void:
            bars["vae_matching_bank" + name[3:]] = matching_bank(vae, banks)
    return bars


def matching_bank(vae: dict, banks: dict[str, dict]) -> dict:
    """Brackets "the memory bank that gives the same mean-over-run accuracy" as the VAE with the measured
    banks (bytes held, mean): the largest bank below the VAE's mean and the smallest at or above it.  The bar
    (the VAE needs <= 1/10 of that bank's bytes) is met if a bank of >= 10x the VAE's bytes is still below its
    mean, not met if a bank of <= 10x (plus the ``10x`` bank's slack) reaches it, else open (None) - reading the
    bank's mean as rising with its size.  ``means_rise_with_bytes`` says whether the measured banks bear that reading
    out: False when a larger bank ran to a lower mean, i.e. the run-to-run spread of one seed exceeds the effect of
    the size between them, and the bracket is as uncertain as that spread."""
    vb, m = vae["replay_footprint"]["bytes"], vae["mean_accuracy"]
    rows = sorted(({"variant": k, "bytes": r["replay_footprint"]["bytes"], "mean": r["mean_accuracy"]}
                   for k, r in banks.items()), key=lambda b: b["bytes"])
    below = [b for b in rows if b["mean"] < m]
    above = [b for b in rows if b["mean"] >= m]
    lo, hi = (below[-1] if below else None), (above[0] if above else None)
    means = [b["mean"] for b in rows]
    met = True if lo and lo["bytes"] >= 10 * vb else False if hi and hi["bytes"] <= 10 * vb + BANK_SLACK else None
    return {"vae_bytes": vb, "vae_mean": m, "banks": rows, "largest_bank_below": lo and lo["variant"],
            "smallest_bank_at_or_above": hi and hi["variant"],
            "matching_bank_over_vae_bytes": [lo and lo["bytes"] / vb, hi and hi["bytes"] / vb], "ten_x_met": met,
            "means_rise_with_bytes": all(a <= b for a, b in zip(means, means[1:]))}
