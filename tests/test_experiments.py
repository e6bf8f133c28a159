"""run_variants: a finished variant kept in a committed folder is reused by a later resume."""

import json
from pathlib import Path

from datafree.experiments import comparable, run_variants


def _fake_run(calls: list):
    def run(out: str, resume: bool, lr: float) -> None:
        calls.append(lr)
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.json").write_text(json.dumps({"student": {"accuracy": lr, "mean_accuracy": lr / 2},
                                                   "teacher": {"accuracy": 0.9}}))
        (d / "metrics.jsonl").write_text(json.dumps({"round": 0, "elapsed_s": 1.0, "accuracy": lr,
                                                     "kd_loss": 0.1}) + "\n")
        (d / "student.safetensors").write_bytes(b"x")
    return run


def test_kept_variant_is_reused_across_run_dirs(tmp_path):
    calls: list = []
    keep = tmp_path / "kept"
    first = run_variants({"a": {"lr": 0.5}}, _fake_run(calls), tmp_path / "runs1", resume=True, keep=keep)
    assert calls == [0.5] and (keep / "a.json").is_file()
    # a new sitting: the run directory is gone, the kept row is reused without running again
    again = run_variants({"a": {"lr": 0.5}}, _fake_run(calls), tmp_path / "runs2", resume=True, keep=keep)
    assert calls == [0.5]
    assert again["a"]["last_accuracy"] == first["a"]["last_accuracy"] == 0.5
    assert again["a"]["history"] == first["a"]["history"]
    # another configuration under the same name is run, not reused
    run_variants({"a": {"lr": 0.25}}, _fake_run(calls), tmp_path / "runs3", resume=True, keep=keep)
    assert calls == [0.5, 0.25]
    assert json.loads((keep / "a.json").read_text())["kwargs"] == {"lr": 0.25}


def test_machine_speed_is_measured_before_each_run_and_kept(tmp_path):
    res = run_variants({"a": {"lr": 0.5}, "b": {"lr": 0.1}}, _fake_run([]), tmp_path / "runs",
                       keep=tmp_path / "kept", calibrate=lambda: 100.0)
    assert res["a"]["machine_speed"] == res["b"]["machine_speed"] == 100.0
    assert json.loads((tmp_path / "kept" / "b.json").read_text())["machine_speed"] == 100.0
    assert comparable(res)["met"] is True


def test_rows_from_machines_of_different_speed_are_not_comparable():
    assert comparable({"a": {"machine_speed": 100.0}, "b": {"machine_speed": 112.0}})["met"] is True
    assert comparable({"a": {"machine_speed": 100.0}, "b": {"machine_speed": 230.0}})["met"] is False
    assert comparable({"a": {"machine_speed": 100.0}, "b": {"machine_speed": None}})["met"] is None


def test_whole_run_rates_of_the_same_work_decide_over_the_spot_reference():
    a = {"machine_speed": 417.0, "synthetic_images_per_s": 10.8}
    b = {"machine_speed": 332.0, "synthetic_images_per_s": 10.5}  # a slow spot reading, same speed over the run
    assert comparable({"a": a, "b": b})["met"] is True
    assert comparable({"a": a, "b": {**b, "synthetic_images_per_s": 4.0}})["met"] is False
    # condensed-only rows did no synthesis: their student rates are compared with each other, not with a's
    c = {"machine_speed": 300.0, "synthetic_images_per_s": None, "student_images_per_s": 197.9}
    d = {"machine_speed": 406.0, "synthetic_images_per_s": None, "student_images_per_s": 198.7}
    out = comparable({"a": a, "b": b, "c": c, "d": d})
    assert set(out["groups"]) == {"synthetic_images_per_s", "student_images_per_s"} and out["met"] is True
    assert comparable({"a": a, "c": c, "d": {**d, "student_images_per_s": 120.0}})["met"] is False
    assert comparable({"a": a, "e": {"machine_speed": None}})["met"] is None
