"""Shared fixtures: the optional ../shared directory (real CIFAR data and verified teachers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
SHARED_SKIP_REASON = "../shared not present (real CIFAR data and verified teachers)"

# Tiny test tensors gain nothing from intra-op threads, and on a small shared machine OpenMP threads
# competing with other processes slow forward passes down by 10-50x.  Override with DATAFREE_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("DATAFREE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The repository's sibling ``shared`` directory, or skip the test when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(SHARED_SKIP_REASON)
    return SHARED_DIR
