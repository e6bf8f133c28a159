"""bf16="auto": bf16 autocast only on CPUs that run it fast (an AVX2-only CPU runs it ~10x slower)."""

from __future__ import annotations

import pytest

from datafree.errors import DatafreeError
from datafree.precision import bf16_fast, cpu_info, resolve_bf16


@pytest.mark.parametrize("line, fast", [
    ("flags\t\t: fpu sse2 avx avx2 fma", False),  # AVX2 only: bf16 falls to slow kernels
    ("flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16", True),  # native bf16 (e.g. Zen 4)
    ("flags\t\t: fpu avx2 avx512f avx512bw avx512vl", True),  # AVX512: vectorised bf16 conversion
    ("flags\t\t: fpu avx2 amx_bf16 amx_tile", True),
    ("Features\t: fp asimd sve bf16", True),  # aarch64 with FEAT_BF16
    ("Features\t: fp asimd", False),
])
def test_bf16_is_used_only_where_the_cpu_runs_it_fast(tmp_path, line, fast):
    f = tmp_path / "cpuinfo"
    f.write_text(f"processor\t: 0\nmodel name\t: Some CPU\n{line}\n\nprocessor\t: 1\nmodel name\t: Other\n")
    info = cpu_info(str(f))
    assert info["model"] == "Some CPU" and bf16_fast(info) is fast
    assert bf16_fast(cpu_info(str(tmp_path / "absent"))) is False  # unknown CPU: float32, never the slow choice


def test_resolve_bf16_takes_auto_on_off_and_refuses_anything_else():
    assert resolve_bf16("auto") is bf16_fast()
    assert resolve_bf16(True) is True and resolve_bf16("off") is False and resolve_bf16("on") is True
    with pytest.raises(DatafreeError, match="auto, on or off"):
        resolve_bf16("maybe")


def test_the_engine_resolves_auto_and_records_the_precision_it_ran(monkeypatch):
    import datafree.precision as precision
    from datafree.distill.engine import DistillConfig, Distiller
    from datafree.models import ModelMeta
    from tests.tiny import tiny_cnn, trained_tiny_teacher

    meta = ModelMeta((3, 8, 8), 4)
    for fast in (False, True):
        monkeypatch.setattr(precision, "_this_cpu_bf16_fast", lambda fast=fast: fast)
        eng = Distiller(trained_tiny_teacher(), tiny_cnn(), meta, DistillConfig(rounds=1, batch_size=8), progress=False)
        assert eng.bf16 is fast and eng.inverter.bf16 is fast
        assert eng.resolved_config()["distill"]["bf16"] is fast
    eng = Distiller(trained_tiny_teacher(), tiny_cnn(), meta, DistillConfig(rounds=1, bf16=False), progress=False)
    assert eng.bf16 is False


def test_deterministic_runs_keep_the_bn_statistics_term_eager():
    # a resumed process engaged the compiled term afresh and its numerics differed from the uninterrupted run's
    from datafree.distill.engine import DistillConfig, Distiller
    from datafree.models import ModelMeta
    from tests.tiny import tiny_cnn, trained_tiny_teacher

    meta = ModelMeta((3, 8, 8), 4)
    cfg = DistillConfig(rounds=1, deterministic=True)
    det = Distiller(trained_tiny_teacher(), tiny_cnn(), meta, cfg, progress=False)
    assert not det.inverter.hooks[0].fusing.allowed
    eng = Distiller(trained_tiny_teacher(), tiny_cnn(), meta, DistillConfig(rounds=1), progress=False)
    assert eng.inverter.hooks[0].fusing.allowed


def test_deterministic_runs_use_one_thread_and_give_the_callers_threads_and_algorithms_back():
    # with two threads 7 of 95 processes took another path from the first synthesis call on (README)
    import torch

    from datafree.distill.engine import DistillConfig, Distiller
    from datafree.models import ModelMeta
    from tests.tiny import tiny_cnn, trained_tiny_teacher

    meta, before = ModelMeta((3, 8, 8), 4), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = DistillConfig(rounds=1, batch_size=8, kd_steps=2, deterministic=True)
        res = Distiller(trained_tiny_teacher(), tiny_cnn(), meta, cfg, progress=False).run_loop()
        assert res.summary["threads"] == 1 and torch.get_num_threads() == 2
        assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting back too
        cfg = DistillConfig(rounds=1, batch_size=8, kd_steps=2)
        res = Distiller(trained_tiny_teacher(), tiny_cnn(), meta, cfg, progress=False).run_loop()
        assert res.summary["threads"] == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("env, loaded, expected, recorded", [
    ({}, False, "30000", "GOMP_SPINCOUNT=30000"),  # nothing chosen, libgomp not loaded yet: datafree's spin
    ({"GOMP_SPINCOUNT": "123"}, False, "123", "GOMP_SPINCOUNT=123"),  # the user's spin is kept
    ({"OMP_WAIT_POLICY": "passive"}, False, None, "OMP_WAIT_POLICY=passive"),  # a policy chosen: no count added
    ({}, True, None, "libgomp default"),  # torch (libgomp) already loaded: too late, nothing changed
])
def test_the_openmp_spin_is_set_only_before_torch_loads_and_when_the_user_chose_none(monkeypatch, env, loaded,
                                                                                     expected, recorded):
    import os
    import sys

    from datafree.omp import set_spin_default, spin_setting

    for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if not loaded:
        monkeypatch.delitem(sys.modules, "torch")  # restored after the test
    set_spin_default()
    assert os.environ.get("GOMP_SPINCOUNT") == expected
    assert spin_setting() == recorded


def test_importing_datafree_first_sets_the_spin_and_the_machine_facts_record_it():
    import json
    import os
    import subprocess
    import sys

    from tests.procs import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import datafree, os, json; from datafree.machine import machine_info; "
            "print(json.dumps([os.environ.get('GOMP_SPINCOUNT'), machine_info()['omp_spin']]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, check=True,
                          capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["30000", "GOMP_SPINCOUNT=30000"]
