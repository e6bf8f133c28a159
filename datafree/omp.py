"""How long torch's OpenMP threads spin at a barrier before they sleep; set before torch loads.

torch's CPU wheel runs its kernels on GNU OpenMP (libgomp).  At every barrier - thousands per training step -
a thread that is done waits for the others by spinning 300,000 iterations (libgomp's default when
``OMP_WAIT_POLICY`` is unset) before it sleeps.  On a machine where another CPU-bound process runs too, the
spinning thread holds a core that the thread it waits for needs, and every barrier waits for the scheduler.
Measured (``benchmarks/contention.py`` at 80d5b9c, a 3-round resnet56 -> resnet20 distill on a 2-core Xeon,
medians of three idle runs, one run beside a ``while True`` process): libgomp's default 16.4 s idle, 211.2 s
loaded; a 30,000-iteration spin 16.4 / 75.0 s; 10,000 16.6 / 52.7 s; ``OMP_WAIT_POLICY=passive`` 22.1 / 42.9 s.
Timed finer on the idle machine, 30,000 cost 0.9 % on a generator call and 0.2 % on student steps, 10,000 4 %,
passive 19-33 %.

So importing datafree (this module, which its ``__init__`` imports first) sets ``GOMP_SPINCOUNT=30000``
unless the user chose a spin (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` in the environment) or torch is
already loaded: libgomp reads its environment once, when it loads, so then it is too late and nothing is
changed.  The CLI imports datafree first, so it always applies there; an API user who imports torch first
keeps libgomp's default.  ``spin_setting`` is what result files record (``machine.omp_spin``).
"""

from __future__ import annotations

import os
import sys

SPINCOUNT = "30000"
SPIN_VARS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # a user who set either has chosen how threads wait


def set_spin_default() -> None:
    """``GOMP_SPINCOUNT=30000`` where no spin is chosen and libgomp has not loaded yet (see above)."""
    if "torch" in sys.modules or any(k in os.environ for k in SPIN_VARS):
        return
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT


def spin_setting() -> str:
    """The OpenMP wait setting of the environment: ``GOMP_SPINCOUNT`` and/or ``OMP_WAIT_POLICY``, or
    "libgomp default"."""
    parts = [f"{k}={os.environ[k]}" for k in SPIN_VARS if k in os.environ]
    return ", ".join(parts) or "libgomp default"


set_spin_default()
