"""How wide should the CIFAR-10 generator be?  resnet56 -> fresh resnet20, data-free, same seed and budget.

    python benchmarks/cifar10_generator_width.py                       # ~40 min: ngf 64 (the default), 32; 15 min each
    python benchmarks/cifar10_generator_width.py --resume --ngf 16     # add a width to the committed rows

One generator step on 256 images takes 2.27 s at ngf 64 and 0.72 s at ngf 32 on a 2-core AVX2 machine,
against 1.27 s for the resnet56 teacher's forward and input-gradient pass: the default generator is about half
of synthesis.  Each width distills with the library defaults otherwise.  Judged on a data-free proxy: the
final student's top-1 agreement with the teacher on 512 images inverted from the teacher by pixel
optimisation (``quant.calib.synthetic_calibration``, seed 123, 100 iterations) - another synthesizer than the
students trained on, no real image.  The full test set scores the final student for the report only (no
per-round evaluation, so no mean over the run).  Writes benchmarks/results/cifar10_generator_width.json.
Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datafree
from datafree.data.augment import normalize
from datafree.data.loaders import load_dataset
from datafree.evaluate import evaluate, logits
from datafree.experiments import _git_commit, save_proxy_rows
from datafree.models import CIFAR10_NORM, create_model, load_weights
from datafree.quant.calib import synthetic_calibration

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MEAN, STD = CIFAR10_NORM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", default="64,32", help="generator widths to compare")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --results (same machine!)")
    ap.add_argument("--out", default="runs/bench_cifar10_generator_width")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "cifar10_generator_width.json"))
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark needs ../shared beside the repo (looked in {SHARED})")
    weights = SHARED / "models/cifar10/resnet56.pt"
    teacher = load_weights(create_model("resnet56"), weights)
    commit = _git_commit()
    probe = synthetic_calibration(teacher, (3, 32, 32), 10, n=512, mean=MEAN, std=STD, seed=123, iterations=100,
                                  oh=10.0)
    t_arg = logits(teacher, probe).argmax(1)
    test = load_dataset(str(SHARED / "data/cifar10/test.npz"))
    xt = normalize(test.x.float() / 255, MEAN, STD)
    rows = json.loads(Path(a.results).read_text())["rows"] if a.resume and Path(a.results).exists() else {}
    for ngf in [int(v) for v in a.ngf.split(",")]:
        out = Path(a.out) / f"ngf{ngf}"
        res = datafree.distill("resnet56", "resnet20", teacher_weights=str(weights), budget=a.budget, seed=0,
                               synth={"ngf": ngf}, out=str(out))
        student = load_weights(create_model("resnet20"), out / "student.safetensors")
        s = res.summary
        agree = (logits(student, probe).argmax(1) == t_arg).float().mean().item()
        rows[f"ngf{ngf}"] = {"ngf": ngf, "rounds": s["rounds"], "synthetic_images_per_s": s["synthetic_images_per_s"],
                             "synthetic_images": s["synthetic_images"],
                             "proxy_agreement_on_inverted": agree,
                             "test_last": evaluate(student, xt, test.y)["accuracy"], "commit": commit}
        print(rows[f"ngf{ngf}"], flush=True)
    save_proxy_rows(a.results, "cifar10_generator_width", a.budget, rows, "student/teacher top-1 agreement on 512 "
                    "pixel-inverted images (seed 123); the test set is reported, not used to choose", sys.argv)


if __name__ == "__main__":
    main()
