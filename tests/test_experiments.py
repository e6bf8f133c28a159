"""run_variants: a finished variant kept in a committed folder is reused by a later resume."""

import json
from pathlib import Path

import pytest

from datafree.experiments import (
    bank_options,
    comparable,
    portable_config,
    rate_window,
    replay_bars,
    run_variants,
    same_config,
    save_proxy_rows,
)


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


def test_a_reused_run_dir_keeps_the_commit_it_ran_at(tmp_path, monkeypatch):
    import datafree.experiments as ex

    keep, runs = tmp_path / "kept", tmp_path / "runs"
    monkeypatch.setattr(ex, "_git_commit", lambda: "aaaaaaa")
    run_variants({"a": {"lr": 0.5}}, _fake_run([]), runs, resume=True, keep=keep)
    monkeypatch.setattr(ex, "_git_commit", lambda: "bbbbbbb")  # a later sitting, another commit
    calls: list = []
    res = run_variants({"a": {"lr": 0.5}, "b": {"lr": 0.1}}, _fake_run(calls), runs, resume=True, keep=keep)
    assert calls == [0.1]  # a's finished run directory was reused
    assert res["a"]["commit"] == json.loads((keep / "a.json").read_text())["commit"] == "aaaaaaa"
    assert res["b"]["commit"] == "bbbbbbb"


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
    # the same rate from another inversion code path (the fused BN term, 8-14 % faster) is not the same machine
    fused = {**b, "machine": {"fused_bn_stats": True}}
    assert comparable({"a": a, "b": fused})["met"] is False
    assert comparable({"a": {**a, "machine": {"fused_bn_stats": True}}, "b": fused})["met"] is True
    assert comparable({"c": c, "d": {**d, "machine": {"fused_bn_stats": True}}})["met"] is True  # no synthesis


def test_kept_rows_match_from_another_checkout(tmp_path):
    """Paths are kept relative to the checkout; rows kept before that (absolute paths of the checkout that
    ran them) still match the same file from another checkout, and a different file does not."""
    root = tmp_path / "repo"
    paths = {"guide": str(root / "benchmarks/x.npz"), "w": str(tmp_path / "shared/m.pt"), "seed": 0}
    now = portable_config(paths, root)
    assert now == {"guide": "benchmarks/x.npz", "w": "../shared/m.pt", "seed": 0}
    legacy = {"guide": "/work/wt/benchmarks/x.npz", "w": "/work/shared/m.pt", "seed": 0}
    assert same_config(legacy, now) and same_config(now, now)
    assert not same_config({**legacy, "guide": "/work/wt/benchmarks/y.npz"}, now)
    assert not same_config({**legacy, "w": "/work/other/m.pt"}, now)
    assert not same_config({**legacy, "seed": 1}, now)
    assert not same_config({"guide": legacy["guide"], "w": legacy["w"]}, now)


def _row(mean: float, last: float, drawdown: float, replay_bytes: int = 0) -> dict:
    return {"mean_accuracy": mean, "last_accuracy": last, "max_drawdown": drawdown,
            "replay_footprint": {"bytes": replay_bytes, "weights_bytes": replay_bytes, "capacity_bytes": replay_bytes}}


def test_replay_bars_compare_each_variant_with_none_of_the_same_suffix():
    res = {"none": _row(0.40, 0.45, 0.04), "vae": _row(0.43, 0.46, 0.01, 10), "memory-bank": _row(0.42, 0.44, 0.03, 90),
           "none+ema0.99": _row(0.45, 0.46, 0.01), "vae+ema0.99": _row(0.46, 0.47, 0.006, 10),
           "vae@encoded": _row(0.44, 0.46, 0.01, 9)}
    bars = replay_bars(res)
    assert bars["vae"] == {"mean_gain_pt": pytest.approx(3.0), "mean_gain_ge_2pt": True, "drawdown_at_most_half": True,
                           "last_not_below_none": True}
    assert bars["memory-bank"]["drawdown_at_most_half"] is False and bars["memory-bank"]["last_not_below_none"] is False
    assert bars["vae+ema0.99"]["mean_gain_pt"] == pytest.approx(1.0)  # against none+ema0.99, not none
    assert "none+ema0.99" not in bars and "none" not in bars
    assert bars["vae_vs_bank"]["bank_over_vae_bytes"] == 9.0 and "vae_vs_bank+ema0.99" not in bars
    # each VAE preset gets its own verdict against the bank of its suffix
    assert bars["vae_vs_bank@encoded"]["bank_over_vae_bytes"] == 10.0
    assert bars["vae_vs_bank@encoded"]["vae_mean_ge_bank_mean"] is True and bars["vae@encoded"]["mean_gain_ge_2pt"]


def test_replay_bars_bracket_the_bank_that_matches_the_vaes_mean():
    """With banks of several sizes, the bank that gives the VAE's mean lies between the largest bank below it
    and the smallest at or above it; the 10x bar is met, not met or open accordingly."""
    vb = 300_000
    res = {"none": _row(0.30, 0.35, 0.02), "vae": _row(0.36, 0.44, 0.03, vb),
           "memory-bank": _row(0.42, 0.50, 0.02, 50 * vb), "memory-bank@300000B": _row(0.33, 0.40, 0.02, vb)}
    curve = replay_bars(res)["vae_matching_bank"]
    assert [b["variant"] for b in curve["banks"]] == ["memory-bank@300000B", "memory-bank"]
    assert curve["largest_bank_below"] == "memory-bank@300000B" and curve["smallest_bank_at_or_above"] == "memory-bank"
    assert curve["matching_bank_over_vae_bytes"] == [1.0, 50.0] and curve["ten_x_met"] is None  # 1x .. 50x: open
    res["memory-bank"]["replay_footprint"]["bytes"] = 10 * vb + 4096  # the 10x bank (with its slack) beats the VAE
    assert replay_bars(res)["vae_matching_bank"]["ten_x_met"] is False
    res["memory-bank"]["mean_accuracy"] = 0.35  # a 10x bank still below the VAE: the matching bank is larger
    curve = replay_bars(res)["vae_matching_bank"]
    assert curve["ten_x_met"] is True and curve["smallest_bank_at_or_above"] is None
    assert "vae_matching_bank" not in replay_bars({k: v for k, v in res.items() if k != "memory-bank@300000B"})
    blended = {**res, "memory-bank@mix": _row(0.50, 0.55, 0.01, 10 * vb)}  # another method: not on the curve
    assert replay_bars(blended)["vae_matching_bank"] == curve
    assert replay_bars(blended)["vae_vs_blended_bank"]["vae_mean_ge_bank_mean"] is False
    assert "vae_vs_blended_bank" not in replay_bars(res)
    two_sized = {**res, "memory-bank@900000B": _row(0.34, 0.41, 0.02, 3 * vb)}
    del two_sized["memory-bank"]  # banks given in bytes only: still bracketed, no 10x verdict of its own
    curve = replay_bars(two_sized)["vae_matching_bank"]
    assert "vae_vs_bank" not in replay_bars(two_sized) and curve["largest_bank_below"] == "memory-bank@900000B"
    assert curve["ten_x_met"] is None and curve["means_rise_with_bytes"] is True
    two_sized["memory-bank@900000B"]["mean_accuracy"] = 0.32  # the larger bank ran lower: one seed's spread shows
    assert replay_bars(two_sized)["vae_matching_bank"]["means_rise_with_bytes"] is False


def test_replay_bars_give_no_verdict_on_a_variant_that_replayed_nothing():
    res = {"none": _row(0.40, 0.45, 0.04), "vae": {**_row(0.50, 0.55, 0.0, 10), "replayed_images": 0},
           "memory-bank": {**_row(0.42, 0.46, 0.01, 100), "replayed_images": 5000}}
    bars = replay_bars(res)
    assert set(bars["vae"]) == {"mean_gain_pt", "void"}  # better numbers, but no replay: no bar is met
    assert bars["vae_vs_bank"]["vae_mean_ge_bank_mean"] is None and "void" in bars["vae_vs_bank"]
    assert bars["memory-bank"]["drawdown_at_most_half"] is True and "void" not in bars["memory-bank"]


def test_replay_bars_of_the_committed_results_are_reproduced():
    stored = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/cifar10_replay.json").read_text())
    again = replay_bars(stored["results"])
    for k, v in stored["bars"].items():
        if k != "same_machine_speed":
            assert again[k] == v, k


def test_machine_facts_name_the_cpu_and_its_bf16_instructions(tmp_path):
    from datafree.api import cpu_model, machine_info

    assert {"cpu_model", "cpu_bf16", "bf16_autocast", "cpu_count", "torch"} <= set(machine_info())
    # a machine with AVX512-BF16 (bf16 work about twice as fast) is told apart from one without, and an
    # AVX2-only one (bf16 ~10x slower there) runs float32
    for flags, want, auto in (("fpu avx2 avx512f avx512_bf16", ["avx512_bf16"], True), ("fpu avx2", False, False)):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
        facts = cpu_model(str(tmp_path / "cpuinfo"))
        assert facts == {"cpu_model": "Some CPU", "cpu_bf16": want, "bf16_autocast": auto}
    assert cpu_model(str(tmp_path / "absent"))["cpu_bf16"] is None


def test_commit_is_dirty_for_code_not_for_result_files(tmp_path):
    import shutil
    import subprocess

    from datafree.experiments import _git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    res = tmp_path / "benchmarks" / "results" / "bf16cpu"
    res.mkdir(parents=True)
    (tmp_path / "pkg").mkdir()
    for f in (res / "table.json", res / "plot.png", res / "set.npz", tmp_path / "pkg" / "code.py"):
        f.write_text("0")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    here = tmp_path / "pkg"  # it is asked from inside the package, as datafree asks from its own folder
    clean = _git_commit(here)
    assert clean and not clean.endswith("-dirty")
    (res / "table.json").write_text("1")
    (res / "plot.png").write_text("1")
    assert _git_commit(here) == clean  # the benchmark's own outputs
    (res / "set.npz").write_text("1")
    assert _git_commit(here) == clean + "-dirty"  # an input kept beside them
    (res / "set.npz").write_text("0")
    (tmp_path / "pkg" / "code.py").write_text("1")
    assert _git_commit(here) == clean + "-dirty"


def test_bank_options_give_a_kept_rows_byte_count_as_an_int():
    assert bank_options("200000") == {"capacity": 200000}
    assert bank_options("3470936B") == {"capacity_bytes": 3470936}  # matches a row kept with the VAE's 10x
    assert bank_options("40MB") == {"capacity_bytes": 40_000_000}
    assert bank_options("10x", 336_956) == {"capacity_bytes": 3_369_560 + 4096}
    with pytest.raises(ValueError, match="footprint"):
        bank_options("10x")


def test_a_kept_row_whose_method_defaults_changed_is_run_again(tmp_path):
    keep = tmp_path / "kept"
    calls: list = []
    run_variants({"a": {"lr": 0.5}}, _fake_run(calls), tmp_path / "runs1", resume=True, keep=keep)
    row = json.loads((keep / "a.json").read_text())
    row["config"] = {"replay": {"pool": 320, "ratio": 0.25}, "distill": {"bf16": True}}  # what the run resolved
    (keep / "a.json").write_text(json.dumps(row))

    def resolve(pool: int):
        return lambda lr: {"replay": {"pool": pool, "ratio": 0.25, "prior": "fitted"}, "distill": {"bf16": False}}

    # same kwargs and defaults (a setting added since, and the machine-resolved bf16, are no change): reused
    run_variants({"a": {"lr": 0.5}}, _fake_run(calls), tmp_path / "runs2", resume=True, keep=keep,
                 resolve=resolve(320))
    assert calls == [0.5]
    # the pool's default changed since the row ran: the same kwargs are another configuration now
    run_variants({"a": {"lr": 0.5}}, _fake_run(calls), tmp_path / "runs3", resume=True, keep=keep,
                 resolve=resolve(200))
    assert calls == [0.5, 0.5]


def test_distill_config_resolves_the_defaults_a_run_writes():
    from datafree.api import distill_config
    from datafree.experiments import changed_defaults

    cfg = distill_config(teacher="resnet56", budget="60m", replay="vae", replay_opts={"pool": 64})
    assert cfg["replay"]["pool"] == 64 and cfg["replay"]["prior"] == "normal" and cfg["distill"]["budget"] == "60m"
    assert "guide" not in cfg and cfg["synthesizer"]["batch_size"] > 0
    guided = distill_config(guide="benchmarks/x.npz", guide_opts={"mode": "mix"}, synthesizer="none")
    assert guided["guide"]["mode"] == "mix" and guided["synthesizer"] == {}  # what a run without synthesis writes
    assert changed_defaults({"replay": {**cfg["replay"], "pool": 320}}, cfg) == ["replay.pool: 320 -> 64"]
    gone = changed_defaults({"replay": {**cfg["replay"], "block": 64}}, cfg)  # a design replaced since
    assert gone == ["replay.block: 64 -> no such setting now"]
    assert changed_defaults({"replay": {k: v for k, v in cfg["replay"].items() if k != "prior"}}, cfg) == []


def test_rate_window_admits_exactly_the_rates_that_keep_a_group_comparable():
    rows = {"a": 10.0, "b": 11.0}
    lo, hi = rate_window(list(rows.values()) + [None])
    assert lo == pytest.approx(11.0 / 1.15) and hi == pytest.approx(11.5)
    for rate in (lo * 0.999, lo * 1.001, 10.5, hi * 0.999, hi * 1.001):
        new = {k: {"synthetic_images_per_s": v} for k, v in {**rows, "new": rate}.items()}
        assert comparable(new)["met"] is (lo <= rate <= hi)
    assert rate_window([]) == (0.0, float("inf"))
    lo, hi = rate_window([10.0, 12.0])  # 12 > 1.15 x 10: the rows already disagree, nothing can join them
    assert lo > hi and comparable({"a": {"synthetic_images_per_s": 10.0}, "b": {"synthetic_images_per_s": 12.0}})[
        "met"] is False


def test_which_group_reads_the_committed_groups(tmp_path):
    import subprocess
    import sys
    res = tmp_path / "results"
    for name, rates in (("main/bench.json", {"plain": 10.4, "mix": 11.0}), ("fast/bench.json", {"plain": 24.0})):
        (res / name).parent.mkdir(parents=True)
        (res / name).write_text(json.dumps({"teacher": "resnet56", "command": f"python run {name}", "bars": {
            "same_machine_speed": {
                "groups": {"synthetic_images_per_s": {"rates": rates}}}}}))
    (res / "other.json").write_text(json.dumps({"bars": {}}))  # no rate group: not listed
    (res / "mnist.json").write_text(json.dumps({"teacher": "lenet5", "bars": {"same_machine_speed": {"groups": {
        "synthetic_images_per_s": {"rates": {"none": 10.3}}}}}}))  # another benchmark's work: not listed
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "which_group.py"
    out = subprocess.run([sys.executable, str(script), "--rate", "10.2", "--results", str(res)],
                         capture_output=True, text=True, check=True).stdout
    assert "fast/bench.json: rows plain 24.00; a new row needs 20.87-27.60: too slow" in out
    assert "main/bench.json: rows plain 10.40, mix 11.00; a new row needs 9.57-11.96: fits" in out
    assert "continue main/bench.json (add the variants it lacks to --variants): DATAFREE_COMPILE=0 python run " \
        "main/bench.json" in out
    assert "other.json" not in out and "mnist.json" not in out


def test_save_proxy_rows_picks_the_best_proxy_and_records_the_command(tmp_path):
    rows = {"ngf64": {"proxy_agreement_on_inverted": 0.81, "held_out_last": 0.99},
            "ngf16": {"proxy_agreement_on_inverted": 0.91, "held_out_last": 0.90}}
    path = tmp_path / "sub" / "width.json"
    save_proxy_rows(path, "width", "240s", rows, "agreement", ["benchmarks/width.py", "--ngf", "64,16"])
    d = json.loads(path.read_text())
    assert d["best_by_proxy"] == "ngf16"  # the proxy decides, never the held-out column
    assert d["rows"] == rows and d["command"] == "python benchmarks/width.py --ngf 64,16"
    assert "cpu_count" in d["machine"]
