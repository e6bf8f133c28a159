"""The safetensors file format (https://github.com/huggingface/safetensors), without the dependency.

Layout: 8-byte little-endian header length N, N bytes of JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then raw
little-endian tensor bytes.  Files written here load with the official library and vice versa.
"""

from __future__ import annotations

import json
import os
import struct

import torch

from datafree.errors import DatafreeError
from datafree.io.atomic import atomic_write_bytes

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
_FROM = {v: k for k, v in _DTYPES.items()}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise DatafreeError(f"cannot store tensor '{name}' of dtype {t.dtype} in safetensors")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the reference writer aligns the data start to 8 bytes
    atomic_write_bytes(path, struct.pack("<Q", len(head)) + head + b"".join(blobs))


def _read_header(f, path: str | os.PathLike) -> dict:
    """The JSON header of an open safetensors file; leaves ``f`` at the start of the tensor bytes."""
    try:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > os.fstat(f.fileno()).st_size - 8:  # a corrupt length would allocate that much
            raise ValueError
        header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError
        return header
    except (struct.error, ValueError, UnicodeDecodeError):
        raise DatafreeError(f"'{path}' is not a valid safetensors file") from None


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    with open(path, "rb") as f:
        header = _read_header(f, path)
        data = f.read()
    out = {}
    try:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            if not 0 <= b <= e <= len(data):
                raise ValueError("tensor data beyond the end of the file")
            buf = bytearray(data[b:e])
            dtype = _FROM[info["dtype"]]
            t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
            out[name] = t.view(dtype).reshape(info["shape"]).clone()
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # truncated or malformed: not a crash
        raise DatafreeError(f"'{path}' is not a valid safetensors file (truncated or corrupt: "
                            f"{type(e).__name__})") from None
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (empty when it has none)."""
    with open(path, "rb") as f:
        return dict(_read_header(f, path).get("__metadata__", {}))
