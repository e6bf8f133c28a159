"""The command line: complete --help, and one clear error line (exit != 0, no traceback) per bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datafree.cli import main
from tests.tiny import tiny_cnn

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/tiny.py:tiny_cnn"


def run_main(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    lines = [s for s in err.strip().splitlines() if s.strip() and "Warning" not in s and not s.startswith("  ")]
    assert len(lines) == 1 and lines[0].startswith("datafree: error:"), err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("cmd", ["distill", "train", "evaluate", "export", "demo", "models"])
def test_help_is_complete(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    if cmd == "distill":
        for opt in ("--teacher", "--teacher-weights", "--student", "--budget", "--rounds", "--eval-data", "--out",
                    "--resume", "--seed", "--synthesizer", "--loss", "--temperature"):
            assert opt in out


def _distill(tmp_path, *extra):
    return ["distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,8,8", "--num-classes", "4",
            "--rounds", "1", "--quiet", "--out", str(tmp_path / "run"), *extra]


def test_unknown_model(capsys, tmp_path):
    code, err = run_main(capsys, "distill", "--teacher", "resnet57", "--student", "resnet20", "--out", str(tmp_path))
    assert_one_line_error(code, err, "unknown model 'resnet57'")


def test_weights_not_matching_architecture(capsys, tmp_path):
    f = tmp_path / "w.pt"
    torch.save(tiny_cnn(num_classes=3).state_dict(), f)
    code, err = run_main(capsys, *_distill(tmp_path, "--teacher-weights", str(f)))
    assert_one_line_error(code, err, "do not match the architecture")


def test_missing_file(capsys, tmp_path):
    code, err = run_main(capsys, *_distill(tmp_path, "--teacher-weights", str(tmp_path / "nope.pt")))
    assert_one_line_error(code, err, "not found")


def test_wrong_input_shape(capsys, tmp_path):
    code, err = run_main(capsys, "distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,12,12",
                         "--num-classes", "4", "--rounds", "1", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "cannot run on inputs of shape (3, 12, 12)")


def test_class_count_mismatch(capsys, tmp_path):
    code, err = run_main(capsys, "distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,8,8",
                         "--num-classes", "5", "--rounds", "1", "--out", str(tmp_path / "r"))
    # tiny_cnn(num_classes=5) is built for 5 classes; a zoo teacher with its own count shows the mismatch
    assert code == 0 or "class-count mismatch" in err
    f = tmp_path / "m.py"
    f.write_text("from tests.tiny import tiny_cnn\ndef four(num_classes=None):\n    return tiny_cnn(4)\n")
    code, err = run_main(capsys, "distill", "--teacher", f"{f}:four", "--student", TINY, "--input-shape", "3,8,8",
                         "--num-classes", "5", "--rounds", "1", "--out", str(tmp_path / "r2"))
    assert_one_line_error(code, err, "class-count mismatch")


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_main(capsys, "distill", "--teacher", TINY, "--student", TINY, "--input-shape", "3,8,8",
                         "--num-classes", "4", "--rounds", "1", "--out", str(blocker / "run"))
    assert_one_line_error(code, err, "cannot write to output directory")


def test_nan_weights_are_refused_on_loading(capsys, tmp_path):
    bad = tiny_cnn()
    with torch.no_grad():
        bad[-1].weight.fill_(float("nan"))
    f = tmp_path / "nan.pt"
    torch.save(bad.state_dict(), f)
    code, err = run_main(capsys, *_distill(tmp_path, "--teacher-weights", str(f), "--kd-steps", "2",
                                          "--synth-opt", "batch_size=8", "--batch-size", "8"))
    assert_one_line_error(code, err, "NaN or infinite values")
    assert not (tmp_path / "run" / "student.safetensors").exists()


def test_nan_loss_stops_cleanly_keeping_the_checkpoint(capsys, tmp_path):
    code, err = run_main(capsys, *_distill(tmp_path, "--kd-steps", "2", "--lr", "1e30", "--synth-opt", "batch_size=8",
                                          "--batch-size", "8"))
    assert_one_line_error(code, err, "became nan")
    assert not (tmp_path / "run" / "student.safetensors").exists()


def test_evaluate_class_mismatch(capsys, tmp_path):
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.array([0, 1, 2, 9]))
    w = tmp_path / "w.pt"
    torch.save(tiny_cnn().state_dict(), w)
    code, err = run_main(capsys, "evaluate", "--model", TINY, "--weights", str(w), "--data", str(tmp_path / "d.npz"),
                         "--num-classes", "4")
    assert_one_line_error(code, err, "class-count mismatch")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "datafree", "evaluate", "--model", "resnet20", "--weights",
                        str(tmp_path / "missing.pt"), "--data", "x.npz"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("datafree: error:") and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_every_option_of_every_command_has_help():
    from datafree.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    missing = [f"{name} {a.option_strings[0]}" for name, p in sub.choices.items() for a in p._actions
               if a.option_strings and a.help is None]
    assert not missing, missing


@pytest.mark.parametrize("args,needle", [
    (["--kd-steps", "0"], "--kd-steps: must be at least 1"),
    (["--lr", "-1"], "--lr: must be a positive number"),
    (["--std", "0"], "--std: expected positive numbers"),
    (["--std", "inf"], "--std: expected comma-separated numbers"),
    (["--seed", "-1"], "--seed: must be from 0 to 4294967295"),
    (["--seed", "99999999999"], "--seed: must be from 0 to 4294967295"),
    (["--num-classes", "0"], "--num-classes: must be at least 1"),
])
def test_bad_numbers_are_argparse_errors(capsys, tmp_path, args, needle):
    with pytest.raises(SystemExit) as e:
        main(_distill(tmp_path, *args))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(2, err, needle)


def test_sweep_bit_lists_parse():
    from datafree.cli import _bits, _exps, build_parser

    assert _bits("3-8") == (3, 4, 5, 6, 7, 8) and _bits("4,6,8") == (4, 6, 8) and _exps("1-3") == (1, 2, 3)
    a = build_parser().parse_args(["sweep", "--model", "m", "--weights", "w", "--eval-data", "d", "--out", "o"])
    assert a.w_bits == (3, 4, 5, 6, 7, 8) and a.a_bits == (4, 6, 8)  # the defaults go through the same parser
    for bad in ("8-3", "abc", "9", "1", "2", "2-8"):
        with pytest.raises(__import__("argparse").ArgumentTypeError):
            _bits(bad)


def test_mistyped_option_values_are_one_line_errors(capsys, tmp_path):
    code, err = run_main(capsys, *_distill(tmp_path, "--synth-opt", "g_steps=abc"))
    assert_one_line_error(code, err, "option 'g_steps' must be int, got 'abc'")
    code, err = run_main(capsys, *_distill(tmp_path, "--replay-opt", "ratio=true"))
    assert_one_line_error(code, err, "option 'ratio' must be float")
    code, err = run_main(capsys, *_distill(tmp_path, "--bf16", "on", "--no-bf16"))
    assert_one_line_error(code, err, "--bf16 on and --no-bf16 disagree")
    code, err = run_main(capsys, *_distill(tmp_path, "--guide-opt", "ratoi=0.2", "--guide", "g.npz"))
    assert_one_line_error(code, err, "the guide has no option 'ratoi'")


def test_a_run_directory_is_neither_overwritten_nor_resumed_with_other_settings(capsys, tmp_path):
    base = ("--kd-steps", "2", "--synth-opt", "batch_size=8", "--batch-size", "8")
    assert run_main(capsys, *_distill(tmp_path, *base))[0] == 0
    run = tmp_path / "run"
    config, metrics = (run / "config.yaml").read_text(), (run / "metrics.jsonl").read_text()
    code, err = run_main(capsys, *_distill(tmp_path, *base))  # a fresh run into a finished one
    assert_one_line_error(code, err, "already holds a run; pass --resume")
    code, err = run_main(capsys, *_distill(tmp_path, *base, "--resume", "--temperature", "2"))
    assert_one_line_error(code, err, "distill.temperature: 20.0 then, 2.0 now")
    code, err = run_main(capsys, *_distill(tmp_path, *base, "--resume", "--synthesizer", "pixel"))
    assert_one_line_error(code, err, "was made with other settings")
    assert (run / "config.yaml").read_text() == config and (run / "metrics.jsonl").read_text() == metrics
    argv = _distill(tmp_path, *base, "--resume")
    argv[argv.index("--rounds") + 1] = "2"  # a longer budget may be resumed
    assert run_main(capsys, *argv)[0] == 0
    code, err = run_main(capsys, "condense", "--data", "mnist5k", "--ipc", "1", "--iterations", "1", "--out", str(run),
                         "--quiet")  # another command's run is not overwritten either
    assert_one_line_error(code, err, "holds a distill run, not a condense one")
    metrics = (run / "metrics.jsonl").read_text()
    code, err = run_main(capsys, "quantize", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4",
                         "--weights", str(run / "student.safetensors"), "--calib-samples", "8", "--out", str(run),
                         "--quiet")
    assert_one_line_error(code, err, "holds a distill run, not a quantize one")
    assert (run / "metrics.jsonl").read_text() == metrics and not (run / "calib.safetensors").exists()


def test_corrupt_weights_and_data_files_are_one_line_errors(capsys, tmp_path):
    import numpy as np

    from datafree.io.safetensors import save_safetensors

    w = tmp_path / "w.safetensors"
    save_safetensors(tiny_cnn().state_dict(), w)
    (tmp_path / "cut.safetensors").write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    np.savez(tmp_path / "neg.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.array([0, 1, -1, 2]))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "neg.npz").read_bytes()[:100])
    common = ["evaluate", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4"]
    code, err = run_main(capsys, *common, "--weights", str(tmp_path / "cut.safetensors"), "--data",
                         str(tmp_path / "neg.npz"))
    assert_one_line_error(code, err, "is not a valid safetensors file")
    code, err = run_main(capsys, *common, "--weights", str(w), "--data", str(tmp_path / "neg.npz"))
    assert_one_line_error(code, err, "labels must be integers from 0")
    code, err = run_main(capsys, *common, "--weights", str(w), "--data", str(tmp_path / "cut.npz"))
    assert_one_line_error(code, err, "cannot read")
    (tmp_path / "text.npz").write_text("hello\n")  # numpy reads it as pickled data: say what it is instead
    code, err = run_main(capsys, *common, "--weights", str(w), "--data", str(tmp_path / "text.npz"))
    assert_one_line_error(code, err, "it is not a numpy .npz archive of arrays")


def test_api_mirrors_every_command():
    import datafree

    for name in ("distill", "train", "evaluate_dataset", "quantize", "prune", "sweep", "condense"):
        assert callable(getattr(datafree, name))


def test_unsigned_weight_formats_and_shape_mismatched_data_are_refused(capsys, tmp_path):
    import numpy as np

    from datafree.io.safetensors import save_safetensors

    w = tmp_path / "w.safetensors"
    save_safetensors(tiny_cnn().state_dict(), w)
    common = ["--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--weights", str(w)]
    code, err = run_main(capsys, "quantize", *common, "--w", "uint8", "--calib-samples", "8", "--out",
                         str(tmp_path / "q"), "--quiet")
    assert_one_line_error(code, err, "weights use signed symmetric formats")
    np.savez(tmp_path / "grey.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.array([0, 1, 2, 3]))
    code, err = run_main(capsys, "evaluate", *common, "--data", str(tmp_path / "grey.npz"))
    assert_one_line_error(code, err, "the data's images have shape (1, 8, 8) but the model takes (3, 8, 8)")



def test_a_refused_command_leaves_no_empty_out_directory(capsys, tmp_path):
    import numpy as np

    from datafree.io.safetensors import save_safetensors

    w = tmp_path / "w.safetensors"
    save_safetensors(tiny_cnn().state_dict(), w)
    np.savez(tmp_path / "grey.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.array([0, 1, 2, 3]))
    common = ["quantize", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--weights", str(w),
              "--eval-data", str(tmp_path / "grey.npz"), "--calib-samples", "8", "--quiet", "--out"]
    code, err = run_main(capsys, *common, str(tmp_path / "new" / "q"))  # refused after the run dir was made
    assert_one_line_error(code, err, "held-out images have shape (1, 8, 8)")
    assert not (tmp_path / "new").exists()  # both levels it created are gone
    keep = tmp_path / "mine"
    keep.mkdir()
    code, err = run_main(capsys, *common, str(keep))
    assert code != 0 and keep.is_dir()  # a directory the user made stays, empty or not
    (keep / "notes.txt").write_text("x")
    code, err = run_main(capsys, *common, str(keep / "q"))
    assert code != 0 and (keep / "notes.txt").read_text() == "x" and not (keep / "q").exists()


def test_demo_refuses_a_directory_that_is_not_its_own(capsys, tmp_path):
    (tmp_path / "proj" / "student").mkdir(parents=True)
    (tmp_path / "proj" / "student" / "notes.txt").write_text("precious")
    code, err = run_main(capsys, "demo", "--budget", "5s", "--out", str(tmp_path / "proj"))
    assert_one_line_error(code, err, "is not the demo's distill run")
    assert (tmp_path / "proj" / "student" / "notes.txt").read_text() == "precious"  # not deleted
    code, _ = run_main(capsys, *_distill(tmp_path))  # a finished distill run is not the demo's either
    assert code == 0
    code, err = run_main(capsys, "demo", "--budget", "5s", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "holds a distill run, not a demo")
    (tmp_path / "proj" / "student" / "notes.txt").unlink()
    (tmp_path / "proj" / "student").rmdir()
    (tmp_path / "run").rename(tmp_path / "proj" / "student")  # someone's distill run, not the demo's own
    code, err = run_main(capsys, "demo", "--budget", "5s", "--out", str(tmp_path / "proj"))
    assert_one_line_error(code, err, "is not the demo's distill run")
    assert (tmp_path / "proj" / "student" / "student.safetensors").is_file()


def test_a_zoo_teacher_without_weights_is_refused(capsys, tmp_path):
    code, err = run_main(capsys, "distill", "--teacher", "resnet56", "--student", "resnet20", "--rounds", "1",
                         "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "would have random weights: pass its trained ones with --teacher-weights")
    assert not (tmp_path / "o").exists()


def test_the_report_records_the_bf16_setting_the_run_used(capsys, tmp_path):
    import json

    assert run_main(capsys, *_distill(tmp_path, "--bf16", "off", "--kd-steps", "2"))[0] == 0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["machine"]["bf16_autocast"] is False


def test_a_report_without_held_out_data_says_no_accuracy_was_measured(capsys, tmp_path):
    assert run_main(capsys, *_distill(tmp_path, "--kd-steps", "2"))[0] == 0
    text = (tmp_path / "run" / "report.md").read_text()
    assert "No held-out data was given" in text and "Accuracy is measured on the held-out data" not in text


def test_training_a_zoo_model_on_data_of_another_shape_names_both(capsys, tmp_path):
    import numpy as np

    np.savez(tmp_path / "digits.npz", x=np.zeros((8, 28, 28, 1), np.uint8), y=np.arange(8) % 4)
    code, err = run_main(capsys, "train", "--model", "resnet20", "--data", str(tmp_path / "digits.npz"), "--epochs",
                         "1", "--out", str(tmp_path / "t"))
    assert_one_line_error(code, err, "training images have shape (1, 28, 28) but resnet20 takes (3, 32, 32)")


def test_condense_and_train_check_everything_before_writing_and_never_overwrite_a_finished_run(capsys, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), y=np.arange(16) % 4)
    c = tmp_path / "c"
    base = ("condense", "--data", str(tmp_path / "d.npz"), "--ipc", "1", "--out", str(c), "--quiet")
    assert run_main(capsys, *base, "--iterations", "2")[0] == 0
    assert [json.loads(r)["iteration"] for r in (c / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    one = [*base[:-3], "--out", str(tmp_path / "c1"), "--quiet", "--iterations", "1"]
    assert run_main(capsys, *one)[0] == 0
    assert len((tmp_path / "c1" / "metrics.jsonl").read_text().splitlines()) == 1  # the first is the last: once
    files = {p.name: p.read_bytes() for p in c.iterdir() if p.is_file()}
    code, err = run_main(capsys, *base, "--budget", "5x")  # a bad budget: refused before anything is written
    assert_one_line_error(code, err, "cannot parse budget '5x'")
    code, err = run_main(capsys, "condense", "--data", str(tmp_path / "d.npz"), "--ipc", "5", "--out",
                         str(tmp_path / "c5"), "--quiet")  # 4 images per class
    assert_one_line_error(code, err, "class 0 has 4 images, fewer than ipc=5")
    assert not (tmp_path / "c5").exists()
    code, err = run_main(capsys, *base, "--iterations", "3")  # a valid rerun does not replace the finished set
    assert_one_line_error(code, err, "already holds a run; choose another --out")
    assert {p.name: p.read_bytes() for p in c.iterdir() if p.is_file()} == files
    t = tmp_path / "t"
    common = ("train", "--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--data",
              str(tmp_path / "d.npz"), "--epochs", "1", "--quiet", "--out", str(t))
    assert run_main(capsys, *common)[0] == 0
    files = {p.name: p.read_bytes() for p in t.iterdir() if p.is_file()}
    code, err = run_main(capsys, *common)
    assert_one_line_error(code, err, "already holds a run; choose another --out")
    np.savez(tmp_path / "grey.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.arange(4))
    code, err = run_main(capsys, *common[:-1], str(tmp_path / "t2"), "--eval-data", str(tmp_path / "grey.npz"))
    assert_one_line_error(code, err, "held-out images have shape (1, 8, 8)")
    assert not (tmp_path / "t2").exists()  # refused before training: nothing written, no empty folder left
    assert {p.name: p.read_bytes() for p in t.iterdir() if p.is_file()} == files


def test_negative_nan_and_out_of_range_numbers_are_one_line_errors(capsys, tmp_path):
    import numpy as np

    for extra, needle in ((("--synth-opt", "g_steps=-1"), "'g_steps' must be a finite number >= 0"),
                          (("--synth-opt", "adv=NaN"), "'adv' must be a finite number >= 0"),
                          (("--synth-opt", "batch_size=0"), "batch_size, g_steps, nz, ngf >= 1")):
        code, err = run_main(capsys, *_distill(tmp_path, *extra))
        assert_one_line_error(code, err, needle)
    x = np.zeros((4, 8, 8, 3), np.float32)
    x[0, 0, 0, 0] = np.nan
    for name, arr, needle in (("nan", x, "pixels must be uint8 0..255 or floats in [0, 1]"),
                              ("big", np.full((4, 8, 8, 3), 1000, np.uint16), "values from 1000.0 to 1000.0"),
                              ("nchw", np.zeros((4, 3, 8, 8), np.uint8), "looks N x C x H x W")):
        np.savez(tmp_path / f"{name}.npz", x=arr, y=np.arange(4))
        code, err = run_main(capsys, "condense", "--data", str(tmp_path / f"{name}.npz"), "--ipc", "1",
                             "--iterations", "1", "--quiet", "--out", str(tmp_path / name))
        assert_one_line_error(code, err, needle)


def test_a_damaged_config_in_the_run_directory_is_one_line_error(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("foo: [\n")
    code, err = run_main(capsys, *_distill(tmp_path))
    assert_one_line_error(code, err, "is not a config datafree can read")


def test_conflicting_or_ignored_flags_and_damaged_files_are_one_line_errors(capsys, tmp_path):
    from datafree.io.safetensors import save_safetensors


    w = tmp_path / "w.safetensors"
    save_safetensors(tiny_cnn().state_dict(), w)
    common = ["--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4", "--weights", str(w), "--quiet"]
    code, err = run_main(capsys, "prune", *common, "--classes", "0,1", "--prune-opt", "n=3", "--out",
                         str(tmp_path / "p"))
    assert_one_line_error(code, err, "--prune-opt n=... is set by --nm")
    code, err = run_main(capsys, "prune", *common, "--classes", "0,1", "--prune-opt", "seed=1", "--out",
                         str(tmp_path / "p"))
    assert_one_line_error(code, err, "--prune-opt seed=... is set by --seed")
    code, err = run_main(capsys, "quantize", *common, "--group-size", "16", "--out", str(tmp_path / "q"))
    assert_one_line_error(code, err, "--group-size applies to --granularity group, not channel")
    torch_file = tmp_path / "w.pt"
    torch.save(tiny_cnn().state_dict(), torch_file)
    torch_file.write_bytes(torch_file.read_bytes()[:200])  # truncated
    for bad, needle in ((torch_file, "it is damaged or not a torch weights file"), (tmp_path, "is a directory")):
        code, err = run_main(capsys, "evaluate", *common[:-3], "--weights", str(bad), "--data", "mnist5k:test")
        assert_one_line_error(code, err, needle)
    from datafree.models import create_model

    save_safetensors(create_model("lenet5").state_dict(), tmp_path / "lenet.safetensors")
    code, err = run_main(capsys, "evaluate", "--model", "lenet5", "--input-shape", "3,28,28", "--weights",
                         str(tmp_path / "lenet.safetensors"), "--data", "mnist5k:test")
    assert_one_line_error(code, err, "lenet5 is built for inputs (1, 28, 28), not (3, 28, 28)")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "a.png").write_bytes(b"not a png")
    code, err = run_main(capsys, "condense", "--data", str(tmp_path / "imgs"), "--ipc", "1", "--iterations", "1",
                         "--quiet", "--out", str(tmp_path / "c"))
    assert_one_line_error(code, err, "a.png' is not a readable image")
