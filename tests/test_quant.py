"""Quantization: formats (bit-exact against ml_dtypes), scales/observers, each algorithm for what it
claims, the pipeline and its CLI, INT8 ONNX export, the Verilog MACs and the sweep."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import datafree
from datafree.errors import DatafreeError
from datafree.quant import QuantConfig, quantize
from datafree.quant.adaround import AdaRoundConfig, adaround
from datafree.quant.bias_correction import BiasCorrectionConfig, bias_correction
from datafree.quant.calib import calibrate_activations, capture, float_mode
from datafree.quant.equalize import CLEConfig, cross_layer_equalization
from datafree.quant.formats import ML_DTYPES, NAMED, IntFormat, MinifloatFormat, format_splits, parse_format
from datafree.quant.gptq import GPTQConfig, gptq, gptq_weight, hessian
from datafree.quant.graph import blocks, equalizable_pairs, fold_bn, prepare, quant_layers
from datafree.quant.quantizer import QuantSpec, activation_params, qdq, quantize_weight, weight_scale
from datafree.quant.smoothquant import SmoothQuantConfig, smoothquant
from tests.tiny import trained_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]


# -- formats --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_minifloat_rounds_bit_exactly_like_ml_dtypes(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = getattr(ml_dtypes, ML_DTYPES[name])
    fmt = NAMED[name]
    codes = np.arange(2**fmt.bits, dtype=np.uint8).view(dt).astype(np.float32)  # every code
    values = torch.from_numpy(codes[np.isfinite(codes)]).double().unique()
    mids = (values[1:] + values[:-1]) / 2  # every tie: round half to even
    near = torch.cat([mids * (1 + 1e-6), mids * (1 - 1e-6)])
    big = fmt.max_value
    x = torch.cat([values, mids, near, torch.randn(50_000, dtype=torch.float64) * big / 4,
                   torch.tensor([big * 1.0001, big * 1.05, -big * 1.3, 1e30, -1e30, math.inf, -math.inf, math.nan,
                                 -math.nan, 0.0, -0.0, 1e-30, -1e-30])]).float()
    ref = torch.from_numpy(x.numpy().astype(dt).astype(np.float32))
    ours = fmt.round(x)
    assert torch.equal(torch.isnan(ref), torch.isnan(ours))
    ok = ~torch.isnan(ref)
    assert torch.equal(ref[ok].view(torch.int32), ours[ok].view(torch.int32))  # same bits, signed zeros included
    assert fmt.max_value == float(ml_dtypes.finfo(dt).max)


def test_minifloat_grid_and_neighbours():
    f = parse_format("e2m1")  # MX FP4: 0 0.5 1 1.5 2 3 4 6
    assert f.grid().tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    lo, hi = f.neighbours(torch.tensor([0.7, 2.0, -2.5, 9.0]))
    assert lo.tolist() == [0.5, 2.0, -3.0, 6.0] and hi.tolist() == [1.0, 2.0, -2.0, 6.0]
    g = parse_format("e3m2_nosub")
    assert float(g.round(torch.tensor(0.06))) == 0.0 and float(g.round(torch.tensor(0.2))) == 0.25


def test_formats_parse_and_validate():
    assert parse_format("int4") == IntFormat(4) and parse_format("uint8") == IntFormat(8, signed=False)
    assert parse_format("fp6_e3m2").max_value == 28 and parse_format("e4m3b6").exp_bias == 6
    assert [f.name for f in format_splits(4)] == ["int4", "fp4_e1m2", "fp4_e2m1", "fp4_e3m0"]
    for bad in ("int1", "fp7_e2m2", "bf17"):
        with pytest.raises(DatafreeError):
            parse_format(bad)
    with pytest.raises(DatafreeError):
        MinifloatFormat(0, 3)


def test_int_rounding_is_half_to_even_and_clamped():
    f = IntFormat(4)
    assert f.round(torch.tensor([0.5, 1.5, 2.5, -0.5, 9.0, -9.0])).tolist() == [0, 2, 2, -0, 7, -8]


# -- scales and observers ---------------------------------------------------------------------------
@pytest.mark.parametrize("gran,shape", [("tensor", (1, 1)), ("channel", (6, 1)), ("group", (6, 20))])
def test_weight_scales_per_granularity(gran, shape):
    w = torch.randn(6, 20)
    s = weight_scale(w, QuantSpec(IntFormat(4), gran, group_size=8, observer="minmax"))
    assert tuple(s.shape) == shape
    q = quantize_weight(w, QuantSpec(IntFormat(4), gran, group_size=8, observer="minmax"))
    grid = q / s.expand_as(w)
    assert torch.allclose(grid, grid.round(), atol=1e-4) and grid.abs().max() <= 8
    assert float((q - w).abs().max()) <= float(s.max()) / 2 + 1e-6


def test_power_of_two_scales_and_mse_observer():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((8, 512))  # heavy tails: clipping pays
    s = weight_scale(w, QuantSpec(IntFormat(4), "channel", scale_type="po2"))
    assert torch.equal(torch.log2(s), torch.log2(s).round())
    spec_mm = QuantSpec(IntFormat(4), "tensor", observer="minmax")
    spec_mse = QuantSpec(IntFormat(4), "tensor", observer="mse")
    err = [float((quantize_weight(w, sp) - w).pow(2).mean()) for sp in (spec_mm, spec_mse)]
    assert err[1] < 0.8 * err[0]  # MSE clips the tails


def test_activation_params_use_unsigned_grid_for_non_negative_inputs():
    from datafree.quant.quantizer import ActObserver

    obs = ActObserver()
    obs.update(torch.rand(1000) * 3)
    fmt, s, z = activation_params(obs, QuantSpec(IntFormat(8), observer="minmax"))
    assert fmt == IntFormat(8, signed=False) and z is None and abs(float(s) - 3 / 255) < 1e-3
    obs2 = ActObserver()
    obs2.update(torch.rand(1000) * 3 - 1)
    fmt, s, z = activation_params(obs2, QuantSpec(IntFormat(8, symmetric=False), observer="minmax"))
    x = torch.linspace(-1, 2, 7)
    assert float((qdq(x, fmt, s, z) - x).abs().max()) <= float(s) / 2 + 1e-6


# -- graph ----------------------------------------------------------------------------------------
class TwoConv(nn.Module):
    """stem -> [c1 -> BN -> ReLU -> c2 -> BN] + skip -> ReLU -> fc: one equalizable pair, (c1, c2)."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.c0(x))
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + x)
        return self.fc(y.mean((2, 3)))


def _two_conv() -> nn.Module:
    torch.manual_seed(0)
    m = TwoConv()
    for bn in (m.b1, m.b2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    with torch.no_grad():  # uneven channel ranges, for equalization to fix
        m.c1.weight[:4] *= 8
    return m.eval()


def test_fold_bn_keeps_the_function_and_prepare_wraps_layers():
    m = _two_conv()
    x = torch.randn(4, 3, 8, 8)
    folded = fold_bn(m)
    assert not any(isinstance(x_, nn.BatchNorm2d) for x_ in folded.modules())
    assert torch.allclose(folded(x), m(x), atol=1e-5)
    q = prepare(m, QuantSpec(IntFormat(8)), QuantSpec(IntFormat(8)))
    assert [layer.name for layer in quant_layers(q)] == ["c0", "c1", "c2", "fc"]
    assert [(a.name, b.name) for a, b in equalizable_pairs(q)] == [("c1", "c2")]


def test_cle_keeps_the_function_and_equalizes_ranges():
    q = prepare(_two_conv(), QuantSpec(IntFormat(8)), None)
    x = torch.randn(4, 3, 8, 8)
    with float_mode(q):
        before = q(x)
    info = cross_layer_equalization(q, None, CLEConfig())
    with float_mode(q):
        assert torch.allclose(q(x), before, atol=1e-4)
    c1, c2 = quant_layers(q)[1:3]
    r1 = c1.layer.weight.abs().reshape(8, -1).amax(1)
    r2 = c2.layer.weight.abs().transpose(0, 1).reshape(8, -1).amax(1)
    assert torch.allclose(r1, r2, rtol=1e-4) and info["cle_pairs"] == 1


def test_smoothquant_keeps_the_float_function():
    q = prepare(_two_conv(), QuantSpec(IntFormat(8)), QuantSpec(IntFormat(8)))
    x = torch.randn(16, 3, 8, 8)
    with float_mode(q):
        before = q(x)
    info = smoothquant(q, x, SmoothQuantConfig(alpha=0.5))
    with float_mode(q):
        assert torch.allclose(q(x), before, atol=1e-4)
    assert info["smoothquant_folded"] == 1 and quant_layers(q)[0].smooth is not None  # the stem: explicit


def _tiny_setup(w: str = "int4", a: str | None = "int8"):
    teacher = trained_tiny_teacher()
    torch.manual_seed(1)
    x = torch.rand(256, 3, 8, 8) * 0.5
    x[torch.arange(256), torch.arange(256) % 3] += 0.5
    spec_a = QuantSpec(parse_format(a)) if a else None
    q = prepare(teacher, QuantSpec(parse_format(w), "channel"), spec_a)
    calibrate_activations(q, x)
    return teacher, q, x


def test_gptq_layer_error_is_below_round_to_nearest():
    torch.manual_seed(0)
    for fmt in ("int4", "e2m1", "int3"):
        x = torch.randn(512, 32) @ torch.randn(32, 32)  # correlated inputs: where GPTQ pays
        w = torch.randn(16, 32)
        spec = QuantSpec(parse_format(fmt), "channel")
        s = weight_scale(w, spec)
        rtn = quantize_weight(w, spec, s)
        h = 2 * x.t().double() @ x.double() / len(x)
        f = parse_format(fmt)
        q = gptq_weight(w, h, lambda col, j, f=f, s=s: qdq(col, f, s[:, 0].double()), act_order=True, block_size=8)
        assert torch.allclose(q / s, (q / s).round(), atol=1e-5) or fmt == "e2m1"
        err = [float((x @ (v - w).t()).pow(2).mean()) for v in (rtn, q)]
        assert err[1] < 0.8 * err[0], (fmt, err)


def test_gptq_on_a_model_beats_rtn_on_the_calibration_batch():
    teacher, q, x = _tiny_setup("int3")
    layer = quant_layers(q)[1]
    inputs, _ = capture(q, layer, x, outputs=False)
    h = hessian(layer, inputs)
    w2 = layer.weight.reshape(len(layer.weight), -1).double()
    rtn_err = torch.einsum("ij,jk,ik->", layer.weight_q.reshape_as(w2).double() - w2, h,
                           layer.weight_q.reshape_as(w2).double() - w2)
    info = gptq(q, x, GPTQConfig())
    d = layer.weight_q.reshape_as(w2).double() - w2
    assert float(torch.einsum("ij,jk,ik->", d, h, d)) < float(rtn_err) and info["gptq_error_vs_rtn"] < 1


@pytest.mark.parametrize("mode", ["layer", "block"])
def test_adaround_lowers_the_reconstruction_error_and_rounds_to_the_grid(mode):
    teacher, q, x = _tiny_setup("int3")
    with float_mode(q):
        ref = q(x)
    rtn_err = float((q(x) - ref).pow(2).mean())
    adaround(q, x, AdaRoundConfig(iters=300, mode=mode, batch=64))
    assert float((q(x) - ref).pow(2).mean()) < rtn_err
    for m in quant_layers(q):
        grid = m.weight_q / m.w_scale.reshape(-1, *([1] * (m.weight_q.dim() - 1)))
        assert torch.allclose(grid, grid.round(), atol=1e-4) and grid.abs().max() <= 4  # int3: -4..3
        lo = torch.floor(m.weight / m.w_scale.reshape(-1, *([1] * (m.weight.dim() - 1))))
        assert torch.all((grid - lo >= -1e-4) & (grid - lo <= 1 + 1e-4))  # only down or up


def test_blocks_are_found():
    m = datafree.create_model("resnet20")
    q = prepare(m, QuantSpec(IntFormat(8)), None)
    assert len(blocks(q)) == 9


def test_bias_correction_removes_the_mean_output_shift():
    teacher, q, x = _tiny_setup("int3")
    last = quant_layers(q)[-1]

    def shift() -> float:
        with float_mode(q):
            _, yf = capture(q, last, x)
        _, yq = capture(q, last, x)
        return float((yq - yf).mean(0).abs().mean())

    before = shift()
    bias_correction(q, x, BiasCorrectionConfig())
    assert shift() < 0.5 * before


def test_quantize_pipeline_orders_algorithms_and_reports_size():
    teacher, _, x = _tiny_setup()
    qm, info = quantize(teacher, QuantConfig(weights="int4", activations="fp8_e4m3",
                                             algorithms=["bias_correction", "gptq", "cle"]), x, progress=False)
    assert list(info["steps"]) == ["cle", "calibrate_activations", "gptq", "bias_correction"]
    assert info["size"]["compression"] > 3 and info["layers"][1]["weights"] == "int4"
    assert info["layers"][0]["weights"] == "int8"  # first / last layer at 8 bits
    with pytest.raises(DatafreeError, match="pick one"):
        quantize(teacher, QuantConfig(algorithms=["gptq", "adaround"]), x, progress=False)
    with pytest.raises(DatafreeError, match="unknown quantization algorithm"):
        quantize(teacher, QuantConfig(algorithms=["magic"]), x, progress=False)


def test_w8a8_quantization_is_close_to_float():
    teacher, _, x = _tiny_setup()
    for w, a in (("int8", "int8"), ("fp8_e4m3", "fp8_e4m3")):
        qm, _ = quantize(teacher, QuantConfig(weights=w, activations=a), x, progress=False)
        with torch.no_grad():
            agree = float((qm(x).argmax(1) == teacher(x).argmax(1)).float().mean())
        assert agree > 0.97, (w, a, agree)


# -- API / CLI ----------------------------------------------------------------------------------------
def test_quantize_cli_end_to_end_with_real_and_synthetic_calibration(tmp_path):
    from datafree.data import ImageSet, save_npz

    torch.manual_seed(0)
    ds = ImageSet((torch.rand(64, 3, 8, 8) * 255).to(torch.uint8), torch.arange(64) % 4)
    save_npz(ds, tmp_path / "real.npz")
    w = tmp_path / "w.safetensors"
    from datafree.io.safetensors import save_safetensors

    save_safetensors(trained_tiny_teacher().state_dict(), w)
    base = [sys.executable, "-m", "datafree", "quantize", "--model", "tests/tiny.py:tiny_cnn", "--weights", str(w),
            "--input-shape", "3,8,8", "--num-classes", "4", "--w", "int4", "--a", "int8", "--algo", "gptq,bc",
            "--eval-data", str(tmp_path / "real.npz"), "--calib-samples", "32", "--quiet"]
    for calib in ("real.npz", "synthetic"):
        out = tmp_path / calib.replace(".", "_")
        r = subprocess.run([*base, "--calib", str(tmp_path / calib) if calib.endswith("npz") else calib,
                            "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        rep = json.loads((out / "report.json").read_text())
        assert rep["algorithms"] == ["gptq", "bias_correction"] and 0 <= rep["accuracy"] <= 1
        assert rep["calibration"].startswith("real" if calib.endswith("npz") else "synthetic")
        for f in ("config.yaml", "quantized.safetensors", "report.md", "calib.safetensors", "metrics.jsonl",
                  "weight_error.png"):
            assert (out / f).is_file()
        if calib.endswith("npz"):
            assert "per class: " in rep["calibration"]
            # datafree evaluate reads the quantized file (its input shape and classes recorded in it)
            ev = subprocess.run([sys.executable, "-m", "datafree", "evaluate", "--model", "tests/tiny.py:tiny_cnn",
                                 "--weights", str(out / "quantized.safetensors"), "--data", str(tmp_path / calib),
                                 "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
            assert ev.returncode == 0, ev.stderr
            assert json.loads(ev.stdout)["accuracy"] == rep["accuracy"]
    # the saved synthetic calibration set is reused as it was made: the same quantized weights
    reuse = tmp_path / "reuse"
    r = subprocess.run([*base, "--calib", str(tmp_path / "synthetic" / "calib.safetensors"), "--out", str(reuse)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "reused from" in json.loads((reuse / "report.json").read_text())["calibration"]
    from datafree.io.safetensors import load_safetensors

    a, b = load_safetensors(tmp_path / "synthetic" / "quantized.safetensors"), load_safetensors(
        reuse / "quantized.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    bad = subprocess.run([*base, "--w", "int99", "--out", str(tmp_path / "bad")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "int99" in bad.stderr


# -- ONNX ------------------------------------------------------------------------------------------
def test_int8_onnx_matches_the_fake_quant_model(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from datafree.export import export_onnx, run_onnx

    teacher, _, x = _tiny_setup()
    qm, _ = quantize(teacher, QuantConfig(quantize_residuals=True), x, progress=False)
    path = export_onnx(qm, tmp_path / "m.onnx", (3, 8, 8), int8=True)
    got = run_onnx(path, x)
    with torch.no_grad():
        ref = qm(x)
    # stated tolerance: onnxruntime's integer kernels requantize with float multipliers and int32 biases,
    # so single LSB flips are expected; logits within 5 % of their mean magnitude, top-1 within 2 %
    assert float((got - ref).abs().mean()) < 0.05 * float(ref.abs().mean())
    assert float((got.argmax(1) == ref.argmax(1)).float().mean()) >= 0.98
    import onnx

    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # activations stay QDQ
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8]
    assert len(weights) == len(quant_layers(qm))  # every weight stored as int8 in the file, none requantized
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) > 1}
    assert not floats  # no float weight matrix left (biases and scales are 1-d)
    with pytest.raises(DatafreeError, match="int8"):
        qm4, _ = quantize(teacher, QuantConfig(weights="int4"), x, progress=False)
        export_onnx(qm4, tmp_path / "m4.onnx", (3, 8, 8), int8=True)


def test_compare_latency_times_every_model_the_asked_number_of_times(tmp_path):
    pytest.importorskip("onnxruntime")
    from datafree.export import compare_latency, export_onnx

    teacher, _, _ = _tiny_setup()
    a = export_onnx(teacher, tmp_path / "a.onnx", (3, 8, 8))
    r = compare_latency({"a": a, "b": a}, (3, 8, 8), batch=4, repeats=7, warmup=1, block=3)
    assert set(r) == {"a", "b"}
    for v in r.values():
        assert v["repeats"] == 7 and v["blocks_of"] == 3 and 0 < v["median_ms"] <= v["p90_ms"]


# -- hardware ----------------------------------------------------------------------------------------
def _value(fmt, code: int) -> float:
    if isinstance(fmt, IntFormat):
        return code - (1 << fmt.bits) if fmt.signed and code >= 1 << (fmt.bits - 1) else code
    s, e, m = code >> (fmt.e + fmt.m), (code >> fmt.m) & ((1 << fmt.e) - 1), code & ((1 << fmt.m) - 1)
    v = (m / 2**fmt.m + (e > 0)) * 2.0 ** (max(e, 1) - fmt.exp_bias)
    return -v if s else v


@pytest.mark.parametrize("w,a", [("e2m1", "int3"), ("int4", "int3"), ("e2m1", "e3m0"), ("e1m1", "e2m0")])
def test_verilog_mac_product_is_exact(tmp_path, w, a):
    yosys = shutil.which("yosys")
    if yosys is None:
        pytest.skip("yosys not installed (apt-get install yosys): the Verilog is only synthesized where it is")
    from datafree.hw.verilog import Operand, acc_width, mac_verilog

    wf, af = parse_format(w), parse_format(a)
    (tmp_path / "p.v").write_text(mac_verilog(wf, af, product_only=True))
    pairs = [(i, j) for i in range(2**wf.bits) for j in range(2**af.bits)]
    cmds = "; ".join(f"eval -set w_r {i} -set a_r {j} -show p" for i, j in pairs)
    r = subprocess.run([yosys, "-p", f"read_verilog {tmp_path / 'p.v'}; proc; {cmds}"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-500:]
    got = [int(b, 2) for b in __import__("re").findall(r"\\p = \d+'([01]+)", r.stdout)]
    acc = acc_width(wf, af)
    lsb = sum(Operand.of(f).exp_min - (f.exp_bias + f.m if isinstance(f, MinifloatFormat) else 0) for f in (wf, af))
    want = [round(_value(wf, i) * _value(af, j) / 2.0**lsb) % (1 << acc) for i, j in pairs]
    assert got == want


def test_mac_cost_table_is_committed_and_covers_the_sweep():
    from datafree.hw.cost import load_table, mac_cost

    table = load_table()
    assert len(table) == 33 * 33
    c = mac_cost("int8", "int8", table)
    assert c["luts"] > mac_cost("int4", "int4", table)["luts"] > mac_cost("int3", "int3", table)["luts"] > 0
    assert mac_cost("fp8_e4m3", "fp8_e4m3", table)["weights"] == "e4m3"


def test_sweep_marks_the_pareto_front(tmp_path):
    from datafree.hw.cost import load_table
    from datafree.quant.sweep import pareto, sweep

    assert pareto([(1, 0.5), (2, 0.6), (3, 0.55), (1, 0.4)]) == [True, True, False, False]
    teacher, _, x = _tiny_setup()
    rows = sweep(teacher, x, x, teacher(x).argmax(1).detach(), [parse_format("int4"), parse_format("e2m1")],
                 [parse_format("int8")], [[]], tmp_path / "s.csv", load_table(), progress=False)
    assert len(rows) == 2 and any(r["pareto"] for r in rows) and (tmp_path / "s.csv").is_file()


def test_compiled_minifloat_rounding_matches_the_exact_one():
    from datafree.quant.formats import _fast_round, as_saturating

    fast = _fast_round()
    if fast is None:
        pytest.skip("torch.compile is unavailable here: the eager rounding is used")
    x = torch.randn(1 << 16) * 50
    x[:6] = torch.tensor([math.nan, -math.nan, math.inf, -math.inf, -1e-30, 1e-30])
    for name in ("fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "e3m4",
                 "e1m2"):
        f = as_saturating(parse_format(name))
        exact = f.round(x.double()).float()  # float64 input: the eager path
        same = lambda a, b: torch.equal(a.isnan(), b.isnan()) and torch.equal(  # noqa: E731  (bits: signed zeros)
            a[~a.isnan()].view(torch.int32), b[~b.isnan()].view(torch.int32))
        assert same(fast(x, f.m, f.min_normal_exp, f.max_value, f.nan == "none", f.nan == "fnuz"), exact), name
        assert same(f.round(x), exact), name  # what the quantizer calls on a large tensor


def test_int_neighbours_are_equal_on_the_grid():
    lo, hi = IntFormat(4).neighbours(torch.tensor([0.0, 1.5, -2.0, 9.0]))
    assert lo.tolist() == [0, 1, -2, 7] and hi.tolist() == [0, 2, -2, 7]


@pytest.mark.parametrize("algo", ["rtn", "gptq", "adaround"])
def test_quantization_keeps_a_pruned_models_zeros(algo):
    """Half the weights of every layer are zero (a pruned model): each algorithm must keep them zero -
    GPTQ's error updates and AdaRound's rounding up would otherwise fill them."""
    teacher, _, x = _tiny_setup()
    sparse = copy.deepcopy(teacher)
    with torch.no_grad():
        for m in sparse.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(m.weight.abs() > m.weight.abs().median())
    algos = [] if algo == "rtn" else [algo]
    opts = {"adaround": {"iters": 200, "batch": 64}}
    _, info = quantize(sparse, QuantConfig(weights="int3", activations="int8", algorithms=algos, options=opts), x,
                       progress=False)
    z = info["weight_zeros"]
    assert z["fp32"] > 0.45 and z["fp32_zeros_kept"] == 1.0 and z["quantized"] >= z["fp32"]
    _, dense = quantize(teacher, QuantConfig(weights="int3", activations="int8"), x, progress=False)
    assert dense["weight_zeros"]["fp32"] == 0 and dense["weight_zeros"]["fp32_zeros_kept"] is None
    assert info["size"]["sparse_bytes"] == info["size"]["quantized_bytes"]  # scattered zeros: stored dense
    if algo == "gptq":  # without the mask, GPTQ's updates fill the pruned positions
        _, off = quantize(sparse, QuantConfig(weights="int3", activations="int8", algorithms=["gptq"],
                                              options={"gptq": {"keep_zeros": False}}), x, progress=False)
        assert off["weight_zeros"]["fp32_zeros_kept"] < 1
        assert info["steps"]["gptq"]["gptq_error_vs_rtn"] < 1  # the masked GPTQ still beats round-to-nearest


def test_quantized_size_counts_a_2_4_pruned_model_in_its_pattern():
    from datafree.prune import nm_mask

    teacher = trained_tiny_teacher()
    with torch.no_grad():  # conv2 (8 x 72) and the classifier (4 x 128): 2:4; conv1 (27 columns) stays dense
        for m in (teacher[3], teacher[7]):
            m.weight.mul_(nm_mask(m.weight.abs(), 2, 4))
    x = torch.rand(64, 3, 8, 8)
    _, info = quantize(teacher, QuantConfig(weights="int4", activations="int8"), x, progress=False)
    size = info["size"]
    # per 2:4 weight: half the slots at b bits + a 2-bit index each, b / 2 + 1 bits instead of b (no 16x16
    # block fits): conv2 at int4 saves 1 bit per weight, the classifier (an edge layer, int8) 3
    assert size["quantized_bytes"] - size["sparse_bytes"] == (8 * 72 * 1 + 4 * 128 * 3) / 8
    assert size["sparse_compression"] > size["compression"]


def test_gptq_block_cached_inputs_equal_the_per_layer_forward(monkeypatch):
    """Inside a ResNet block, GPTQ takes a layer's input from the block run on its cached input: the weights
    must be those of a forward pass of the whole prefix per layer."""
    import sys

    torch.manual_seed(0)
    model = datafree.create_model("resnet20").eval()
    x = torch.randn(48, 3, 16, 16)
    cfg = QuantConfig(weights="int4", activations="int8", algorithms=["gptq"])
    q_cached, info = quantize(model, cfg, x, progress=False)
    monkeypatch.setattr(sys.modules["datafree.quant.gptq"], "block_of", lambda m: {})
    q_plain, _ = quantize(model, cfg, x, progress=False)
    assert info["steps"]["gptq"]["gptq_layers"] == 20
    a, b = q_cached.state_dict(), q_plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["int2", "int3", "int4", "int8", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp6_e3m2",
                                  "fp6_e2m3", "fp4_e2m1", "e3m2", "e2m1_nosub", "e4m3b6"])
def test_weight_codes_round_trip_every_grid_value_in_the_formats_bit_width(name):
    from datafree.quant.codes import code_bits, decode, encode, signed_grid
    from datafree.quant.formats import as_saturating

    fmt = as_saturating(parse_format(name))
    grid = signed_grid(fmt)
    assert code_bits(fmt) == fmt.bits and len(grid) <= 2**fmt.bits and torch.equal(grid, grid.sort().values)
    torch.manual_seed(0)
    values = grid[torch.randint(len(grid), (3 * len(grid) + 5,))]  # an odd count: the last byte is partly used
    values[: len(grid)] = grid  # every value at least once
    packed = encode(values, fmt)
    assert packed.dtype == torch.uint8 and len(packed) == math.ceil(len(values) * fmt.bits / 8)
    assert torch.equal(decode(packed, fmt, len(values)), values)
    assert torch.equal(decode(encode(values * (1 + 1e-7), fmt), fmt, len(values)), values)  # nearest grid value
    with pytest.raises(DatafreeError, match="do not hold"):
        decode(packed[:-1], fmt, len(values))


def test_a_saved_quantized_model_holds_packed_codes_and_no_float_weights(tmp_path):
    from datafree.io.safetensors import load_safetensors
    from datafree.quant import save_quantized

    teacher, _, x = _tiny_setup()
    cfg = QuantConfig(weights="int4", activations="int8", w_granularity="group", group_size=8, edge_bits=None)
    qmodel, _ = quantize(teacher, cfg, x, progress=False)
    save_quantized(qmodel, cfg, tmp_path / "q.safetensors")
    stored = load_safetensors(tmp_path / "q.safetensors")
    layers = quant_layers(qmodel)
    for m in layers:
        rows, cols = m.weight_q.shape[0], m.weight_q[0].numel()
        assert len(stored[f"quant::{m.name}.weight_codes"]) == math.ceil(rows * cols * 4 / 8)  # 4 bits a weight
        assert stored[f"quant::{m.name}.w_scale"].shape == (rows, math.ceil(cols / 8))  # one scale per group
    assert not [k for k in stored if k.endswith(("weight_q", "layer.weight"))]
    weights = sum(m.weight_q.numel() for m in layers)
    assert sum(v.numel() for k, v in stored.items() if k.endswith("weight_codes")) == sum(
        math.ceil(m.weight_q.numel() / 2) for m in layers) < weights


@pytest.mark.parametrize("cfg", [
    QuantConfig(weights="int4", activations="int4", algorithms=["smoothquant", "bias_correction"]),
    QuantConfig(weights="fp6_e3m2", activations="e2m1", w_granularity="group", group_size=4),
    QuantConfig(weights="int8", activations="int6_asym", quantize_residuals=True),
    QuantConfig(weights="int3", activations="int8", algorithms=["gptq"]),  # weights computed in float64
    QuantConfig(weights="e2m1", activations=None, algorithms=["adaround"], options={"adaround": {"iters": 20}}),
])
def test_a_saved_quantized_model_loads_back_to_the_same_outputs(tmp_path, cfg):
    from datafree.quant import load_quantized, save_quantized

    torch.manual_seed(0)
    model = datafree.create_model("resnet20").eval() if cfg.quantize_residuals else trained_tiny_teacher()
    x = torch.rand(32, 3, 8, 8)
    qmodel, _ = quantize(model, cfg, x, progress=False)
    save_quantized(qmodel, cfg, tmp_path / "q.safetensors")
    fresh = datafree.create_model("resnet20") if cfg.quantize_residuals else trained_tiny_teacher(seed=1)
    loaded = load_quantized(fresh.eval(), tmp_path / "q.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))
        calibrated_elsewhere, _ = quantize(model, cfg, x * 0.5, progress=False)
        assert not torch.equal(calibrated_elsewhere(x), qmodel(x))  # the activation scales make the difference


class Fork(nn.Module):
    """One tensor, two quantized consumers (c1, c2) and a residual add: what share_input_quantizers rewires."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2 = (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                     nn.Conv2d(8, 8, 1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.c0(x))
        return self.fc((self.c1(y) + self.c2(y) + y).mean((2, 3)))


@pytest.mark.parametrize("acts", ["int8", "fp8_e4m3"])
def test_a_tensor_with_two_quantized_consumers_is_quantized_once(acts):
    torch.manual_seed(0)
    model, x = Fork().eval(), torch.rand(64, 3, 8, 8)
    qm, _ = quantize(model, QuantConfig(activations=acts, quantize_residuals=True), x, progress=False)  # minifloats
    # used to fail here: the tracer stepped into the moved quantizer's rounding, which branches on its tensor
    calls = [n for n in qm.graph.nodes if n.op == "call_module" and str(n.target).startswith("input_quant")]
    assert len(calls) == 1 and not str(calls[0].args[0].target).startswith("input_quant")  # Q(x), never Q(Q(x))
    assert qm.c1.input_prequantized and qm.c2.input_prequantized  # both read the one shared quantized tensor
    with torch.no_grad():
        assert float((qm(x) - model(x)).abs().max()) < 0.1 * float(model(x).abs().max())


def test_unsigned_activations_take_a_zero_point_for_signed_inputs():
    from datafree.quant.quantizer import ActObserver

    obs = ActObserver()
    obs.update(torch.linspace(-1, 2, 1000))
    fmt, s, z = activation_params(obs, QuantSpec(parse_format("uint8"), observer="minmax"))
    assert fmt == IntFormat(8, signed=False, symmetric=False) and z is not None
    x = torch.linspace(-1, 2, 101)
    assert float((qdq(x, fmt, s, z) - x).abs().max()) <= float(s) / 2 + 1e-6  # negatives kept, not clipped at 0


@pytest.mark.parametrize("algo,opt,needle", [
    ("gptq", {"block_size": 0}, "block_size >= 1"), ("gptq", {"damp": -1.0}, "'damp' must be a finite number >= 0"),
    ("bias_correction", {"batch_size": 0}, "batch_size >= 1"), ("adaround", {"iters": 0}, "iters >= 1"),
    ("adaround", {"batch": 0}, "batch >= 1"), ("adaround", {"beta": 5}, "adaround beta"),
    ("adaround", {"mode": "foo"}, "layer or block"), ("cle", {"iterations": 0}, "iterations >= 1"),
    ("smoothquant", {"alpha": 3.0}, "in [0, 1]"), ("smoothquant", {"alpha": float("nan")}, "finite number >= 0")])
def test_algorithm_options_out_of_range_are_refused_before_calibration(algo, opt, needle):
    with pytest.raises(DatafreeError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        QuantConfig(algorithms=[algo], options={algo: opt}).check()


def test_formats_float32_cannot_hold_are_refused():
    for name, needle in (("e9m40", "at most 16 bits"), ("e8m7", "exponent range"), ("e4m3b-200", "exponent range")):
        with pytest.raises(DatafreeError, match=needle):
            parse_format(name)
    assert parse_format("e5m10").bits == 16


def test_onnx_incompatible_settings_and_a_finished_run_are_refused_before_calibration(tmp_path):
    teacher, _, x = _tiny_setup()
    for opts, needle in (({"weights": "int4"}, "int8 weights"), ({"activations": "fp8_e4m3"}, "8-bit integer"),
                         ({"w_granularity": "group"}, "per group"), ({"activations": None}, "not float")):
        with pytest.raises(DatafreeError, match=needle):
            datafree.quantize(teacher, QuantConfig(**opts), calib=x, input_shape=(3, 8, 8), num_classes=4,
                              onnx=True, out=str(tmp_path / "o"), progress=False)
        assert not (tmp_path / "o" / "calib.safetensors").exists()
    with pytest.raises(DatafreeError, match="give out="):  # the ONNX files have nowhere to go
        datafree.quantize(teacher, calib=x, input_shape=(3, 8, 8), num_classes=4, onnx=True, progress=False)
    datafree.quantize(teacher, calib=x, input_shape=(3, 8, 8), num_classes=4, out=str(tmp_path / "q"), progress=False)
    report = (tmp_path / "q" / "report.md").read_text()
    assert "the first and last layers: 0 int8 x uint8" in report and "widens them, never narrows" in report
    before = (tmp_path / "q" / "calib.safetensors").read_bytes()
    with pytest.raises(DatafreeError, match="holds a finished quantize run"):
        datafree.quantize(teacher, calib=x[:16], input_shape=(3, 8, 8), num_classes=4, out=str(tmp_path / "q"),
                          progress=False)
    assert (tmp_path / "q" / "calib.safetensors").read_bytes() == before  # the finished run is untouched


def test_a_model_fx_cannot_trace_is_refused_before_calibration(tmp_path):
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.c(x)
            return (y if float(y.mean()) > 0 else -y).mean((2, 3))  # data-dependent control flow

    with pytest.raises(DatafreeError, match="cannot trace the model"):
        datafree.quantize(Branchy(), calib="synthetic", input_shape=(3, 8, 8), num_classes=4, out=str(tmp_path / "b"),
                          progress=False)
    assert not (tmp_path / "b" / "calib.safetensors").exists()


def test_loading_quantized_weights_as_float_ones_points_to_load_quantized(tmp_path):
    teacher, _, x = _tiny_setup()
    datafree.quantize(teacher, calib=x, input_shape=(3, 8, 8), num_classes=4, out=str(tmp_path / "q"), progress=False)
    with pytest.raises(DatafreeError, match="holds a quantized model.*load_quantized"):
        datafree.load_weights(trained_tiny_teacher(), tmp_path / "q" / "quantized.safetensors")
