"""Atomic file output, budgets and a dependency-free safetensors reader/writer."""

from datafree.io.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from datafree.io.budget import Budget, parse_duration
from datafree.io.safetensors import load_safetensors, save_safetensors

__all__ = [
    "Budget",
    "atomic_write_bytes",
    "atomic_write_text",
    "ensure_writable_dir",
    "load_safetensors",
    "parse_duration",
    "save_safetensors",
]
