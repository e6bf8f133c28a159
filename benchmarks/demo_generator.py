"""How wide should the demo's generator be?  MNIST-5k, LeNet-5 teacher -> data-free LeNet-5-half, 240 s.

    python benchmarks/demo_generator.py                  # ~16 min: ngf 64, 32, 16 (its teacher: the demo's recipe)
    python benchmarks/demo_generator.py --resume --ngf 8     # add a width to the committed rows

In the demo, synthesis takes about 90 % of the time, and the generator's two convolutions (ngf = 64: 128 -> 128
channels at 14 x 14, 128 -> 64 at 28 x 28) are most of it: about 0.68 s per generator step on 128 images on a
2-core AVX2 machine, against 0.20 s at ngf = 32.  A narrower generator gives the fixed budget more rounds.
Each width runs the demo's distillation with the same seed and budget.  The choice is made on a data-free
proxy: the student's top-1 agreement with the teacher on 1,024 images inverted from the teacher by pixel
optimisation (``quant.calib.synthetic_calibration``, seed 123; bitwise the same images on every invocation,
so rows added with ``--resume`` see the same probe) - another synthesizer than the one every student trained
on, and no real digit.  The held-out digits' accuracy is measured for the report only, never
used to choose.  Writes benchmarks/results/demo_generator.json.  Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datafree
from datafree.data import load_mnist5k
from datafree.demo import DEMO_DISTILL, DEMO_SYNTH
from datafree.evaluate import logits
from datafree.experiments import save_proxy_rows
from datafree.models import create_model, load_weights
from datafree.quant.calib import synthetic_calibration

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.1307,), (0.3081,)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", default="64,32,16", help="generator widths to compare")
    ap.add_argument("--budget", default="240s", help="each distillation's wall-clock budget (the demo's)")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --results (same machine!)")
    ap.add_argument("--out", default="runs/bench_demo_generator")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "demo_generator.json"))
    a = ap.parse_args()
    out = Path(a.out)
    teacher_path = out / "teacher" / "model.safetensors"
    if teacher_path.exists():
        teacher = load_weights(create_model("lenet5"), teacher_path)
    else:  # the demo's teacher recipe
        teacher = datafree.train("lenet5", load_mnist5k("train"), epochs=12, out=str(out / "teacher"), lr=0.05,
                                 flip=False, seed=0)["model_obj"]
    probe = synthetic_calibration(teacher, (1, 28, 28), 10, n=1024, mean=MEAN, std=STD, seed=123, oh=10.0)
    t_arg = logits(teacher, probe).argmax(1)
    test = load_mnist5k("test")
    rows = json.loads(Path(a.results).read_text())["rows"] if a.resume and Path(a.results).exists() else {}
    for ngf in [int(v) for v in a.ngf.split(",")]:
        res = datafree.distill(teacher, "lenet5_half", budget=a.budget, seed=0, eval_data=test,
                               out=str(out / f"ngf{ngf}"), synth={**DEMO_SYNTH, "ngf": ngf}, **DEMO_DISTILL)
        rep = json.loads((out / f"ngf{ngf}" / "report.json").read_text())
        student = load_weights(create_model("lenet5_half"), out / f"ngf{ngf}" / "student.safetensors")
        agree = (logits(student, probe).argmax(1) == t_arg).float().mean().item()
        rows[f"ngf{ngf}"] = {"ngf": ngf, "rounds": rep["student"].get("rounds"),
                             "synthetic_images_per_s": rep["student"].get("synthetic_images_per_s"),
                             "proxy_agreement_on_inverted": agree,
                             "held_out_last": rep["student"]["accuracy"],
                             "held_out_mean": res.summary.get("mean_accuracy")}
        print(rows[f"ngf{ngf}"], flush=True)
    save_proxy_rows(a.results, "demo_generator", a.budget, rows, "student/teacher top-1 agreement on 1,024 "
                    "pixel-inverted images (seed 123); held-out digits are reported, not used to choose", sys.argv)


if __name__ == "__main__":
    main()
