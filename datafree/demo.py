"""The embedded demo: MNIST-5k, LeNet-5 teacher -> data-free LeNet-5-half, on a CPU in minutes.

1. train a LeNet-5 teacher on the 4,000-digit split (reused if the run directory already has it);
2. data-free distill LeNet-5-half: the distiller sees only the teacher, never a training digit;
3. evaluate both on the 1,000 held-out digits and write runs/demo/report.json.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from datafree.api import distill, train
from datafree.config import load_yaml
from datafree.errors import DatafreeError
from datafree.io.atomic import ensure_writable_dir
from datafree.io.budget import Budget
from datafree.models import create_model, load_weights
from datafree.run import config_kind

# digits: no mirror augmentation; a generator a quarter as wide as the CIFAR default (ngf 16, not 64): at 64 its
# two convolutions were ~90 % of the demo's time, 6 rounds in 240 s against 32 at 16 (benchmarks/demo_generator.py,
# chosen on a data-free proxy: agreement with the teacher on pixel-inverted images, 0.81 / 0.85 / 0.91 / 0.71 for
# ngf 64 / 32 / 16 / 8); everything else is the library default
DEMO_DISTILL = dict(batch_size=256, kd_steps=50, synth_every=5, lr=0.1, flip=False)
DEMO_SYNTH = dict(batch_size=128, ngf=16)


def _check_demo_dir(out_dir: Path) -> None:
    """A demo replaces ``student/`` and reuses ``teacher/``: anything there that is not the demo's own run (a LeNet-5
    teacher trained by ``train``, a LeNet-5-half distilled from it), and another command's run or report at the top,
    is refused rather than deleted or written into.  Other files in the directory are left alone."""
    def kind(d: Path) -> str | None:  # the command whose run directory d is, "demo-..." for the demo's own
        if not (d / "config.yaml").is_file():
            return None
        cfg = load_yaml((d / "config.yaml").read_text()) or {}
        if cfg.get("model") == "lenet5" and "train" in cfg:
            return "demo-train"
        if (cfg.get("student") or {}).get("arch") == "lenet5_half" and "distill" in cfg:
            return "demo-distill"
        return config_kind(cfg) or "another"

    if kind(out_dir) is not None:
        raise DatafreeError(f"'{out_dir}' holds a {kind(out_dir)} run, not a demo; choose another --out")
    rep = out_dir / "report.json"
    if rep.is_file() and "data_used_by_distiller" not in rep.read_text():
        raise DatafreeError(f"'{out_dir}' holds a report.json that is not a demo's; choose another --out")
    for sub, want in (("student", "distill"), ("teacher", "train")):
        d = out_dir / sub
        if d.exists() and kind(d) != f"demo-{want}":
            raise DatafreeError(f"'{d}' exists and is not the demo's {want} run (the demo would replace it); choose "
                                "another --out")


def run_demo(out: str = "runs/demo", budget: str = "240s", seed: int = 0, progress: bool = True) -> dict:
    Budget.parse(budget)  # a bad budget fails now, not after the teacher's training
    if Path(out).is_dir():
        _check_demo_dir(Path(out))
    out_dir = ensure_writable_dir(out)
    t0 = time.time()
    teacher_path = out_dir / "teacher" / "model.safetensors"
    if teacher_path.exists():
        print(f"reusing teacher {teacher_path}")
    else:  # by name, not in memory, so that the reports name the data
        print("1/2 training the LeNet-5 teacher on the 4,000 MNIST-5k training digits")
        train("lenet5", "mnist5k", epochs=12, out=str(out_dir / "teacher"), lr=0.05, flip=False, seed=seed,
              eval_data="mnist5k:test", progress=progress)
    print(f"2/2 data-free distillation into LeNet-5-half ({budget}; no training digit is used)")
    if (out_dir / "student").is_dir():  # a demo starts its student over; the teacher above is reused
        shutil.rmtree(out_dir / "student")
    teacher = load_weights(create_model("lenet5"), teacher_path)  # in memory: a named teacher would draw its
    # random init after distill's seed and so change the student's initial weights the committed numbers came from
    res = distill(teacher, "lenet5_half", budget=budget, seed=seed, eval_data="mnist5k:test",
                  out=str(out_dir / "student"), synth=DEMO_SYNTH, progress=progress, **DEMO_DISTILL)
    import json

    srep = json.loads((out_dir / "student" / "report.json").read_text())
    report = {"teacher": {"arch": "lenet5", **{k: v for k, v in srep["teacher"].items() if k != "arch"}},
              "student": {"arch": "lenet5_half", "accuracy": srep["student"]["accuracy"],
                          "mean_accuracy": res.summary.get("mean_accuracy"),
                          "params": srep["student"]["params"]},
              "held_out": "MNIST-5k held-out split, 1,000 digits", "data_used_by_distiller": "none",
              "elapsed_s": time.time() - t0}
    from datafree.run import RunDir

    RunDir(out_dir).save_json("report.json", report)
    print("\n| model | params | held-out accuracy |\n|---|---:|---:|")
    for k in ("teacher", "student"):
        print(f"| {report[k]['arch']} | {report[k]['params']:,} | {100 * report[k]['accuracy']:.2f} % |")
    print(f"\ntotal {report['elapsed_s']:.0f} s; report {os.path.join(out, 'report.json')}")
    return report
