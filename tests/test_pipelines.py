"""What the commands around the methods promise: reports that name what was saved and in which unit, a custom
student evaluated with the normalisation its run recorded, per-class real data for pruning, options that
cannot be silently ignored, and a sweep directory with its config, report and comparable points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import datafree
from datafree.cli import main
from datafree.config import load_yaml
from datafree.data.augment import normalize
from datafree.data.loaders import stratified_indices
from datafree.errors import DatafreeError
from datafree.io.safetensors import save_safetensors
from datafree.models import as_model
from tests.tiny import tiny_cnn, trained_tiny_teacher

TINY = "tests/tiny.py:tiny_cnn"
FAST = dict(batch_size=16, kd_steps=4, synth_every=2, channels_last=False, synth=dict(batch_size=16, nz=8, ngf=8,
                                                                                      g_steps=1))
NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _one_line_error(capsys, code: int, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("datafree: error:") and needle in err[0], err


def test_distilled_custom_student_reports_ema_and_points_and_keeps_its_normalisation(tmp_path):
    torch.manual_seed(0)
    ds = datafree.ImageSet((torch.rand(40, 3, 8, 8) * 255).to(torch.uint8), torch.arange(40) % 4)
    out = tmp_path / "run"
    res = datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=(3, 8, 8), num_classes=4, rounds=2,
                           seed=0, eval_data=ds, out=str(out), progress=False, ema=0.9, mean=NORM[0], std=NORM[1],
                           **FAST)
    md = (out / "report.md").read_text()
    student_row = next(s for s in md.splitlines() if s.startswith("| student"))
    assert student_row.rstrip(" |").endswith("pt")  # max drawdown is a difference of accuracies: points
    assert "EMA of the student's weights (decay 0.9)" in md and "saved as student.safetensors" in md
    # the run recorded the student's input space: a model outside the zoo needs no --input-shape / --mean again
    got = datafree.evaluate_dataset(tiny_cnn(), ds, weights=str(out / "student.safetensors"))
    x = normalize(ds.float(), *NORM)
    assert got["accuracy"] == datafree.evaluate(res.student, x, ds.y)["accuracy"]
    assert got["loss"] == pytest.approx(datafree.evaluate(res.student, x, ds.y)["loss"], rel=1e-5)
    meta = as_model(tiny_cnn(), str(out / "student.safetensors")).datafree_meta
    assert (meta.input_shape, meta.num_classes, meta.mean, meta.std) == ((3, 8, 8), 4, *NORM)


def test_recorded_normalisation_wins_over_the_zoo_default(tmp_path):
    torch.manual_seed(0)
    ds = datafree.ImageSet((torch.rand(16, 1, 28, 28) * 255).to(torch.uint8), torch.arange(16) % 10)
    datafree.train("lenet5", ds, epochs=1, out=str(tmp_path / "t"), mean=(0.2,), std=(0.5,), progress=False)
    w = str(tmp_path / "t" / "model.safetensors")
    meta = as_model("lenet5", w).datafree_meta
    assert (meta.name, meta.mean, meta.std) == ("lenet5", (0.2,), (0.5,))  # not MNIST's (0.1307,), (0.3081,)
    assert datafree.evaluate_dataset("lenet5", ds, weights=w) == datafree.evaluate_dataset(
        "lenet5", ds, weights=w, mean=(0.2,), std=(0.5,))
    four = datafree.ImageSet(ds.x, ds.y % 4)  # a zoo model trained for 4 classes is rebuilt for 4
    datafree.train("lenet5", four, epochs=1, out=str(tmp_path / "t4"), num_classes=4, progress=False)
    assert as_model("lenet5", str(tmp_path / "t4" / "model.safetensors")).datafree_meta.num_classes == 4


def test_guide_options_without_guide_samples_are_refused(capsys, tmp_path):
    with pytest.raises(DatafreeError, match="guide options"):
        datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=(3, 8, 8), num_classes=4, rounds=1,
                         progress=False, guide_opts={"adv": 2.0}, **FAST)
    code = main(["distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,8,8", "--num-classes", "4",
                 "--rounds", "1", "--quiet", "--guide-opt", "adv=2", "--out", str(tmp_path / "d")])
    _one_line_error(capsys, code, "no guide samples")
    code = main(["distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,8,8", "--num-classes", "4",
                 "--rounds", "1", "--quiet", "--guide-mode", "mix", "--out", str(tmp_path / "d")])
    _one_line_error(capsys, code, "no guide samples")


def test_options_for_an_unselected_quantization_algorithm_are_refused_before_calibration(capsys, tmp_path):
    w = tmp_path / "w.safetensors"
    save_safetensors(tiny_cnn().state_dict(), w)
    out = tmp_path / "q"
    code = main(["quantize", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--weights", str(w),
                 "--algo", "gptq", "--algo-opt", "adaround.iters=10", "--calib-samples", "8", "--out", str(out),
                 "--quiet"])
    _one_line_error(capsys, code, "'adaround', which is not selected")
    assert not (out / "calib.safetensors").exists()  # refused before the calibration data was made
    # option keys are read like --algo names: aliases and case
    datafree.QuantConfig(algorithms=["bc"], options={"bias_correction": {}}).check()
    sq = datafree.QuantConfig(algorithms=["sq"], options={"SQ": {"alpha": 0.9}})
    sq.check()
    assert sq.algorithm_config("smoothquant").alpha == 0.9
    with pytest.raises(DatafreeError, match="has no option 'bogus'"):
        datafree.QuantConfig(algorithms=["bc"], options={"bc": {"bogus": 1}}).check()


def test_quantize_records_the_calibration_images_it_used(tmp_path):
    torch.manual_seed(0)
    calib = torch.rand(12, 3, 8, 8)
    q = datafree.quantize(trained_tiny_teacher(), datafree.QuantConfig(weights="int8", activations="int8"), calib,
                          input_shape=(3, 8, 8), num_classes=4, out=str(tmp_path / "q"), calib_samples=512,
                          progress=False)
    cfg = load_yaml((tmp_path / "q" / "config.yaml").read_text())
    assert (cfg["calib_samples"], cfg["calib_images"]) == (512, 12)  # asked for, used
    assert "12 images" in q.report["calibration"]


def test_stratified_indices_draw_up_to_the_same_number_per_class():
    y = torch.tensor([0] * 50 + [1] * 50 + [2] * 3 + [3] * 40)
    idx = stratified_indices(y, [0, 1, 2], 10, seed=0)
    assert torch.bincount(y[idx], minlength=4).tolist() == [10, 10, 3, 0]  # a short class gives all it has
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, stratified_indices(y, [0, 1, 2], 10, seed=0))
    assert not torch.equal(idx, stratified_indices(y, [0, 1, 2], 10, seed=1))


def test_prune_with_real_data_draws_the_same_number_per_user_class(tmp_path):
    torch.manual_seed(0)
    y = torch.tensor([0] * 60 + [1] * 12 + [2] * 30)  # class 0 is five times as common as class 1
    ds = datafree.ImageSet((torch.rand(len(y), 3, 8, 8) * 255).to(torch.uint8), y)
    res = datafree.prune(trained_tiny_teacher(), classes=[0, 1], data=ds, input_shape=(3, 8, 8), num_classes=4,
                         progress=False, block=8, steps=1, iterations=2, samples_per_class=10, lr=0.002,
                         out=str(tmp_path / "p"))
    assert "0: 10, 1: 10" in res.report["data"] and res.report["kind"].startswith("class-aware")
    with pytest.warns(UserWarning, match=r"fewer than 20 images of classes \[1\] \(1: 12\)"):
        res = datafree.prune(trained_tiny_teacher(), classes=[0, 1], data=ds, input_shape=(3, 8, 8), num_classes=4,
                             progress=False, block=8, steps=1, iterations=2, samples_per_class=20, lr=0.002)
    assert "0: 20, 1: 12" in res.report["data"]  # the other class does not make up for the short one
    with pytest.raises(DatafreeError, match=r"no image of class\(es\) \[3\]"):
        datafree.prune(trained_tiny_teacher(), classes=[0, 3], data=ds, input_shape=(3, 8, 8), num_classes=4,
                       progress=False, block=8, steps=1, iterations=2, samples_per_class=10)
    mag = datafree.prune(trained_tiny_teacher(), classes=[0, 1], input_shape=(3, 8, 8), num_classes=4,
                         progress=False, block=8, steps=1, iterations=2, samples_per_class=4, saliency="magnitude")
    assert "class-agnostic" in mag.report["kind"] and not mag.report["kind"].startswith("class-aware")


def test_sweep_writes_config_and_report_and_refuses_incomparable_points(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    w = tmp_path / "w.safetensors"
    save_safetensors(trained_tiny_teacher().state_dict(), w)
    torch.manual_seed(0)
    np.savez(tmp_path / "d.npz", x=(torch.rand(32, 8, 8, 3) * 255).to(torch.uint8).numpy(),
             y=(torch.arange(32) % 4).numpy())
    out = tmp_path / "s"
    common = ["sweep", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--weights", str(w),
              "--eval-data", str(tmp_path / "d.npz"), "--calib", str(tmp_path / "d.npz"), "--calib-samples", "16",
              "--a-bits", "8", "--exps", "2", "--quiet", "--out", str(out)]
    assert main([*common, "--w-bits", "8"]) == 0
    cfg = load_yaml((out / "config.yaml").read_text())["sweep"]
    assert cfg["w_bits"] == [8] and cfg["calib_samples"] == 16
    md = (out / "report.md").read_text()
    assert "Pareto front" in md and "pareto.png" in md and "calibration data: **real" in md
    summary = json.loads((out / "sweep.json").read_text())
    n = summary["points"]
    assert len(summary["rows"]) == n and 0 <= summary["fp32_accuracy"] <= 1  # the points and their baseline
    assert f"scores **{100 * summary['fp32_accuracy']:.2f} %**" in (out / "report.md").read_text()
    made = (out / "calib.safetensors").stat().st_mtime_ns
    assert main([*common, "--w-bits", "4,8"]) == 0  # more formats: the old points are kept, new ones added
    assert json.loads((out / "sweep.json").read_text())["points"] > n
    assert (out / "calib.safetensors").stat().st_mtime_ns == made  # on the images the old points used
    assert load_yaml((out / "config.yaml").read_text())["sweep"]["w_bits"] == [4, 8]  # every point's settings
    capsys.readouterr()
    _one_line_error(capsys, main([*common, "--w-bits", "8", "--calib-samples", "8"]), "other settings")
    _one_line_error(capsys, main([*common, "--w-bits", "7", "--mean", "0.9,0,0", "--std", "1,1,1"]), "other settings")
    _one_line_error(capsys, main(["quantize", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4",
                                  "--weights", str(w), "--calib-samples", "8", "--quiet", "--out", str(out)]),
                    "holds a sweep run")
    (out / "config.yaml").unlink()  # a sweep.csv whose settings cannot be checked
    _one_line_error(capsys, main([*common, "--w-bits", "7"]), "without the config.yaml")
    bad = tmp_path / "bad"  # bad held-out data: refused before calibration, nothing written
    np.savez(tmp_path / "lab7.npz", x=(torch.rand(8, 8, 8, 3) * 255).to(torch.uint8).numpy(), y=np.array([7] * 8))
    _one_line_error(capsys, main([*common[:-1], str(bad), "--w-bits", "8", "--eval-data", str(tmp_path / "lab7.npz")]),
                    "held-out labels go up to 7")
    assert not bad.exists()  # the directory it made is removed again
    _one_line_error(capsys, main([*common[:-1], str(bad), "--w-bits", "8", "--eval-data", str(tmp_path / "no.npz")]),
                    "no.npz")
    assert not bad.exists()  # the directory it made is removed again


def test_sweep_compares_its_inputs_by_content_and_plots_tied_points(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    w = tmp_path / "w.safetensors"
    save_safetensors(trained_tiny_teacher().state_dict(), w)
    x = (torch.rand(32, 8, 8, 3) * 255).to(torch.uint8).numpy()
    np.savez(tmp_path / "d.npz", x=x, y=(torch.arange(32) % 4).numpy())
    out = tmp_path / "s"
    common = ["sweep", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--weights", str(w),
              "--calib-samples", "8", "--a-bits", "8", "--exps", "3", "--quiet", "--out", str(out)]
    assert main([*common, "--eval-data", str(tmp_path / "d.npz"), "--w-bits", "8", "--algo", "rtn;bc"]) == 0
    assert (out / "pareto.png").is_file() and (out / "report.md").is_file()
    from datafree.quant.sweep import plot_pareto  # two points tied on both axes (two algorithms, same result)

    tied = [{"weights": "int8", "activations": "int8", "algorithms": a, "luts": "100", "accuracy": "0.5",
             "pareto": "True"} for a in ("rtn", "bias_correction")]
    assert plot_pareto(tied, tmp_path / "tied.png", "tied") and (tmp_path / "tied.png").is_file()
    spelt = str(tmp_path / "." / "d.npz")  # the same file, spelt otherwise: the same sweep
    assert main([*common, "--eval-data", spelt, "--w-bits", "7"]) == 0
    np.savez(tmp_path / "d.npz", x=255 - x, y=(torch.arange(32) % 4).numpy())  # another file under the same path
    capsys.readouterr()
    _one_line_error(capsys, main([*common, "--eval-data", str(tmp_path / "d.npz"), "--w-bits", "6"]),
                    "sweep.eval_data_id")


def test_conflicting_option_spellings_are_refused(capsys, tmp_path):
    with pytest.raises(DatafreeError, match="under two names"):
        datafree.QuantConfig(algorithms=["cle"], options={"cle": {"iterations": 3},
                                                          "equalization": {"iterations": 5}}).check()
    code = main(["distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,8,8", "--num-classes", "4",
                 "--rounds", "1", "--quiet", "--guide", "g.npz", "--guide-mode", "guided", "--guide-opt", "mode=mix",
                 "--out", str(tmp_path / "d")])
    _one_line_error(capsys, code, "disagree")

