"""datafree.io (safetensors, budgets, atomic output) and datafree.config (YAML subset, dataclass dicts)."""

from __future__ import annotations

import json
import os
import struct
import sys

import pytest
import torch

from datafree.config import dump_yaml, from_dict, load_yaml, to_dict
from datafree.distill import DistillConfig
from datafree.errors import DatafreeError
from datafree.io import (
    Budget,
    atomic_write_bytes,
    atomic_write_text,
    ensure_writable_dir,
    load_safetensors,
    parse_duration,
    save_safetensors,
)
from datafree.synthesis import GeneratorConfig

try:
    import safetensors.torch as st
except ImportError:  # pragma: no cover - depends on the environment
    st = None

needs_official = pytest.mark.skipif(
    st is None, reason="the official 'safetensors' package is not installed (pip install safetensors)"
)



# ---------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------

def _sample(dtype: torch.dtype, shape=(3, 4), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 100).to(dtype)
    info = torch.iinfo(dtype)
    # include the extreme values so that sign/width handling is exercised
    t = torch.randint(max(info.min, -(2**40)), min(info.max, 2**40), shape, generator=g, dtype=torch.int64).to(dtype)
    flat = t.view(-1)
    flat[0], flat[-1] = info.min, info.max
    return t


def _read_header(path) -> tuple[int, dict]:
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_safetensors_roundtrip_each_dtype(tmp_path, dtype):
    tensors = {"w": _sample(dtype), "v": _sample(dtype, (5,), seed=1), "empty": torch.zeros(0, 3, dtype=dtype)}
    path = tmp_path / "t.safetensors"
    save_safetensors(tensors, path)
    _assert_same(tensors, load_safetensors(path))


def test_safetensors_roundtrip_mixed_file_and_layout(tmp_path):
    tensors = {
        "f32": _sample(torch.float32, (2, 3, 4)),
        "f16": _sample(torch.float16, (7,)),
        "bf16": _sample(torch.bfloat16, (3, 3)),
        "i64": _sample(torch.int64, (5,)),
        "u8": _sample(torch.uint8, (4, 4)),
        "bool": _sample(torch.bool, (9,)),
        "empty": torch.empty(0, dtype=torch.float32),
        "u8_scalar": torch.tensor(7, dtype=torch.uint8),
        "bool_scalar": torch.tensor(True),
        # non-contiguous input must be stored by value
        "transposed": torch.arange(12, dtype=torch.float32).view(3, 4).t(),
    }
    path = tmp_path / "mixed.safetensors"
    save_safetensors(tensors, path)
    back = load_safetensors(path)
    _assert_same(tensors, back)
    # loaded tensors own their memory (no aliasing of one shared buffer)
    back["f32"].add_(1)
    assert torch.equal(load_safetensors(path)["f32"], tensors["f32"])

    n, header = _read_header(path)
    assert (8 + n) % 8 == 0, "data section must start 8-byte aligned"
    size = os.path.getsize(path)
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == size - 8 - n
    for (_, e), (b, _) in zip(spans, spans[1:]):
        assert e == b, "tensor byte ranges must be contiguous and non-overlapping"
    assert header["bf16"]["dtype"] == "BF16" and header["bool"]["dtype"] == "BOOL"
    assert header["u8_scalar"]["shape"] == []


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool])
def test_safetensors_0d_single_byte(tmp_path, dtype):
    t = torch.tensor(1, dtype=dtype)
    save_safetensors({"s": t}, tmp_path / "s.safetensors")
    _assert_same({"s": t}, load_safetensors(tmp_path / "s.safetensors"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64], ids=str)
def test_safetensors_0d_wide(tmp_path, dtype):
    # every BatchNorm state_dict has 0-d int64 'num_batches_tracked' entries
    t = torch.tensor(3, dtype=dtype)
    save_safetensors({"s": t}, tmp_path / "s.safetensors")
    _assert_same({"s": t}, load_safetensors(tmp_path / "s.safetensors"))


def test_safetensors_metadata_stored_as_strings(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors({"a": torch.ones(2)}, path, metadata={"format": "pt", "round": 12, "acc": 0.5})
    _, header = _read_header(path)
    assert header["__metadata__"] == {"format": "pt", "round": "12", "acc": "0.5"}
    assert set(load_safetensors(path)) == {"a"}, "__metadata__ must not come back as a tensor"
    save_safetensors({"a": torch.ones(2)}, path)
    assert "__metadata__" not in _read_header(path)[1]


def test_safetensors_no_temp_files_left(tmp_path):
    save_safetensors({"a": torch.ones(3)}, tmp_path / "a.safetensors")
    save_safetensors({"a": torch.zeros(3)}, tmp_path / "a.safetensors")  # overwrite
    assert os.listdir(tmp_path) == ["a.safetensors"]
    assert torch.equal(load_safetensors(tmp_path / "a.safetensors")["a"], torch.zeros(3))


def test_safetensors_errors(tmp_path):
    with pytest.raises(DatafreeError, match="complex"):
        save_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is certainly not a safetensors file")
    with pytest.raises(DatafreeError, match="not a valid safetensors"):
        load_safetensors(bad)
    bad.write_bytes(b"")
    with pytest.raises(DatafreeError, match="not a valid safetensors"):
        load_safetensors(bad)


def _official_set() -> dict:
    return {
        "f32": _sample(torch.float32, (2, 3)),
        "f16": _sample(torch.float16, (4,)),
        "bf16": _sample(torch.bfloat16, (2, 2)),
        "i64": _sample(torch.int64, (3,)),
        "u8": _sample(torch.uint8, (5,)),
        "bool": _sample(torch.bool, (6,)),
        "empty": torch.zeros(0, 2),
        "scalar_u8": torch.tensor(200, dtype=torch.uint8),
    }


@needs_official
def test_ours_loads_in_official(tmp_path):
    from safetensors import safe_open

    tensors = _official_set()
    path = tmp_path / "ours.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt", "note": "datafree"})
    _assert_same(tensors, st.load_file(str(path)))
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "datafree"}


@needs_official
def test_official_loads_in_ours(tmp_path):
    tensors = _official_set()
    tensors["scalar_f32"] = torch.tensor(1.25)  # official writer handles 0-d of any width
    tensors["scalar_i64"] = torch.tensor(-7)
    path = tmp_path / "official.safetensors"
    st.save_file(tensors, str(path), metadata={"k": "v"})
    _assert_same(tensors, load_safetensors(path))


@needs_official
def test_official_and_ours_agree_on_header(tmp_path):
    tensors = _official_set()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_safetensors(tensors, ours)
    st.save_file(tensors, str(theirs))
    h1, h2 = _read_header(ours)[1], _read_header(theirs)[1]
    assert set(h1) == set(h2)
    for k in tensors:
        assert h1[k]["dtype"] == h2[k]["dtype"] and h1[k]["shape"] == h2[k]["shape"], k
    assert os.path.getsize(ours) - 8 - _read_header(ours)[0] == os.path.getsize(theirs) - 8 - _read_header(theirs)[0]


# ---------------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0), ("2h", 7200.0), ("1h 30m", 5400.0),
    ("1.5m", 90.0), ("45", 45.0), ("2.5", 2.5), (" 15M ", 900.0), ("1h0m30s", 3630.0),
    (30, 30.0), (1.5, 1.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["abc", "-5m", "5x", "", "m", "1h30", "15 minutes", "1e3", "inf", "5m-"])
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(DatafreeError, match="cannot parse budget"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0), ("120", 120.0),
                                               (60, 60.0)])
def test_budget_parse_seconds(text, seconds):
    b = Budget.parse(text)
    assert b.rounds is None and b.seconds == pytest.approx(seconds)


def test_budget_parse_rounds():
    b = Budget.parse("40r")
    assert b.rounds == 40 and b.seconds is None
    assert str(b) == "40 rounds"
    assert Budget.parse("40R").rounds == 40
    # an explicit round count wins over a wall-clock budget
    b = Budget.parse("15m", rounds=3)
    assert b.rounds == 3 and b.seconds is None
    assert Budget.parse(None, rounds=5).rounds == 5


@pytest.mark.parametrize("text", ["abc", "-5m", "0", "0s", "0m", "-5", "r", "x40r", "40rr", None])
def test_budget_parse_rejects(text):
    with pytest.raises(DatafreeError):
        Budget.parse(text)


def test_budget_parse_rejects_zero_rounds():
    with pytest.raises(DatafreeError):
        Budget.parse("0r")


def test_budget_progress_seconds():
    b = Budget.parse("100s")
    assert b.progress(0.0, 0) == 0.0
    assert b.progress(50.0, 999) == pytest.approx(0.5)  # rounds are ignored for a time budget
    assert not b.done(99.9, 10**6)
    assert b.done(100.0, 0)
    assert b.progress(250.0, 0) == 1.0  # clipped
    assert str(b) == "100s"


def test_budget_progress_rounds():
    b = Budget.parse("4r")
    assert b.progress(10**9, 0) == 0.0  # time is ignored for a round budget
    assert b.progress(0.0, 1) == pytest.approx(0.25)
    assert not b.done(10**9, 3)
    assert b.done(0.0, 4)
    assert b.progress(0.0, 9) == 1.0


# ---------------------------------------------------------------------------------------------------
# atomic output
# ---------------------------------------------------------------------------------------------------

def test_atomic_write_text_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "first version, much longer than the second\n")
    atomic_write_text(p, "zweite Fassung \u00e9\u2713\n")
    assert p.read_text(encoding="utf-8") == "zweite Fassung \u00e9\u2713\n"
    assert os.listdir(tmp_path) == ["out.txt"]
    atomic_write_bytes(p, b"\x00\xff")
    assert p.read_bytes() == b"\x00\xff"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old")

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"], "the temporary file must be removed on failure"


def test_ensure_writable_dir_creates_nested(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    out = ensure_writable_dir(target)
    assert out == target and target.is_dir()
    assert os.listdir(target) == [], "the write probe must be removed"
    assert ensure_writable_dir(str(target)) == target  # existing dir is fine, str accepted


def test_ensure_writable_dir_under_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    target = blocker / "run"
    with pytest.raises(DatafreeError) as ei:
        ensure_writable_dir(target)
    assert str(target) in str(ei.value)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="running as root: chmod does not block writes")
def test_ensure_writable_dir_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(DatafreeError) as ei:
            ensure_writable_dir(ro)
        assert str(ro) in str(ei.value)
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------------------------------------------
# config: YAML subset and dataclass dicts
# ---------------------------------------------------------------------------------------------------

NESTED = {
    "name": "run one: with colon",
    "quote": 'say "hi" # not a comment',
    "unicode": "caf\u00e9 \u2713",
    "yes_string": "yes",
    "null_string": "null",
    "number_string": "12",
    "empty_string": "",
    "int": 42,
    "neg": -7,
    "zero": 0,
    "float": 0.25,
    "neg_float": -2.5,
    "small_float": 5e-4,
    "whole_float": 3.0,
    "t": True,
    "f": False,
    "none": None,
    "list": [1, 2.5, "three", None, True, [4, 5]],
    "empty_list": [],
    "empty_dict": {},
    "model": {"name": "resnet20", "shape": [3, 32, 32], "deep": {"a": 1, "b": {"c": [0.5], "d": None}}},
    "after_nested": 1,
}


@pytest.fixture(params=["pyyaml", "fallback"])
def yaml_backend(request, monkeypatch):
    if request.param == "pyyaml":
        pytest.importorskip("yaml", reason="PyYAML is not installed")
    else:
        monkeypatch.setitem(sys.modules, "yaml", None)  # 'import yaml' now raises ImportError
    return request.param


def test_yaml_roundtrip_nested(yaml_backend):
    text = dump_yaml(NESTED)
    back = load_yaml(text)
    assert back == NESTED
    assert type(back["whole_float"]) is float and type(back["int"]) is int and back["t"] is True


def test_yaml_fallback_is_really_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError):
        import yaml  # noqa: F401
    # the fallback only understands JSON scalars; a bare YAML word is not valid for it
    with pytest.raises(ValueError):
        load_yaml("key: bare word")
    assert load_yaml("# comment\n\na: 1\n") == {"a": 1}
    assert load_yaml("") == {}


def test_yaml_empty(yaml_backend):
    assert dump_yaml({}) == ""
    assert load_yaml(dump_yaml({})) == {}




@pytest.mark.parametrize("backend", [
    "fallback",
    "pyyaml",
])
def test_yaml_roundtrip_exponent_floats(backend, monkeypatch):
    if backend == "pyyaml":
        pytest.importorskip("yaml", reason="PyYAML is not installed")
    else:
        monkeypatch.setitem(sys.modules, "yaml", None)
    data = {"lr": 1e-5, "big": 1e20, "nested": {"wd": 2.5e-7}}
    assert load_yaml(dump_yaml(data)) == data


def test_to_dict_from_dict_distill_config():
    for cfg in (DistillConfig(),
                DistillConfig(synthesizer="pixel", synth={"iterations": 5, "lr": 0.05}, budget=None, rounds=3,
                              batch_size=8, lr=0.05, temperature=4.0, loss="l1", augment=False, bf16=False, seed=7)):
        d = to_dict(cfg)
        assert isinstance(d, dict) and d["batch_size"] == cfg.batch_size and d["synth"] == cfg.synth
        assert from_dict(DistillConfig, d) == cfg
        # unknown keys (e.g. from a newer version) are ignored
        assert from_dict(DistillConfig, {**d, "no_such_option": 1}) == cfg


def test_to_dict_from_dict_generator_config():
    for cfg in (GeneratorConfig(), GeneratorConfig(batch_size=16, nz=32, ngf=8, lr_g=0.01, meta=False, adv=0.0)):
        d = to_dict(cfg)
        assert d["nz"] == cfg.nz and d["meta"] is cfg.meta
        assert from_dict(GeneratorConfig, d) == cfg


def test_config_through_yaml(yaml_backend):
    cfg = DistillConfig(synth={"nz": 64, "meta": False}, rounds=2, budget=None, lr=0.125)
    gen = GeneratorConfig(nz=64, meta=False)
    text = dump_yaml({"distill": to_dict(cfg), "generator": to_dict(gen)})
    back = load_yaml(text)
    assert from_dict(DistillConfig, back["distill"]) == cfg
    assert from_dict(GeneratorConfig, back["generator"]) == gen
