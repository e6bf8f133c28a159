"""datafree export: FP32 ONNX from float weights, INT8 ONNX from quantize's quantized.safetensors, measured."""

from __future__ import annotations

import json

import pytest
import torch

import datafree
from datafree.data import ImageSet, save_npz
from datafree.io.safetensors import save_safetensors
from tests.test_cli import TINY, assert_one_line_error, run_main
from tests.tiny import trained_tiny_teacher

pytest.importorskip("onnxruntime")
MODEL = ["--model", TINY, "--input-shape", "3,8,8", "--num-classes", "4"]


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    x = (torch.rand(96, 3, 8, 8) * 128).to(torch.uint8)
    y = torch.arange(96) % 4
    x[y < 3, y[y < 3]] += 120  # the tiny teacher's task: class c < 3 has channel c bright
    save_npz(ImageSet(x, y), tmp_path / "d.npz")
    save_safetensors(trained_tiny_teacher().state_dict(), tmp_path / "w.safetensors")
    return tmp_path


def test_export_float_weights_to_fp32_onnx_with_its_accuracy(capsys, files):
    code = datafree.cli.main(["export", *MODEL, "--weights", str(files / "w.safetensors"), "--out",
                              str(files / "m.onnx"), "--eval-data", str(files / "d.npz"), "--batch", "8", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and (files / "m.onnx").stat().st_size == r["bytes"] and r["format"] == "fp32"
    assert r["vs_pytorch"]["top1_agreement"] == 1.0 and r["vs_pytorch"]["max_abs_logit_diff"] < 1e-4
    ref = datafree.evaluate_dataset(TINY, files / "d.npz",
                                    weights=str(files / "w.safetensors"), num_classes=4, input_shape=(3, 8, 8))
    assert r["accuracy"] == ref["accuracy"] > 0.5 and r["eval_images"] == 96
    assert r["latency"]["batch"] == 8 and r["latency"]["median_ms"] > 0


def test_export_a_quantized_file_to_int8_onnx(capsys, files):
    import onnx

    datafree.quantize(TINY, calib=str(files / "d.npz"), weights=str(files / "w.safetensors"), input_shape=(3, 8, 8),
                      num_classes=4, out=str(files / "q"), progress=False,
                      config=datafree.QuantConfig(weights="int8", activations="int8"))
    code = datafree.cli.main(["export", *MODEL, "--weights", str(files / "q" / "quantized.safetensors"), "--out",
                              str(files / "q.onnx"), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["format"] == "int8 (QDQ)" and r["vs_pytorch"]["inputs"] == "random normal"
    assert r["vs_pytorch"]["top1_agreement"] >= 0.9 and "accuracy" not in r
    graph = onnx.load(str(files / "q.onnx")).graph
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer) >= 3  # the three layers' weights


def test_export_refuses_bad_outputs_and_non_int8_quantized_files(capsys, files):
    w = ["--weights", str(files / "w.safetensors")]
    code, err = run_main(capsys, "export", *MODEL, *w, "--out", str(files / "m.pt"))
    assert_one_line_error(code, err, "must name an .onnx file")
    code, err = run_main(capsys, "export", *MODEL, *w, "--out", str(files / "missing" / "m.onnx"))
    assert_one_line_error(code, err, "does not exist")
    datafree.quantize(TINY, calib=str(files / "d.npz"), weights=str(files / "w.safetensors"), input_shape=(3, 8, 8),
                      num_classes=4, out=str(files / "q4"), progress=False,
                      config=datafree.QuantConfig(weights="int4", activations="int8", edge_bits=None))
    code, err = run_main(capsys, "export", *MODEL, "--weights", str(files / "q4" / "quantized.safetensors"), "--out",
                         str(files / "q4.onnx"))
    assert_one_line_error(code, err, "--w int8")
    assert not list(files.glob("*.onnx")) and not list(files.glob(".*.tmp"))
