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
