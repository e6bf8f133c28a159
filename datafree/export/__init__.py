"""Export and measurement: ONNX (FP32 and INT8 QDQ) and onnxruntime inference/latency."""

from datafree.export.onnx import compare_latency, export_onnx, latency, run_onnx, session, to_qdq

__all__ = ["compare_latency", "export_onnx", "latency", "run_onnx", "session", "to_qdq"]
