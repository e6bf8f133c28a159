"""How long torch's OpenMP threads spin at a barrier before they sleep; set before torch loads.

torch's CPU wheel runs its kernels on GNU OpenMP (libgomp).  At every barrier - thousands per training step -
a thread that is done waits for the others by spinning 300,000 iterations (libgomp's default when
``OMP_WAIT_POLICY`` is unset) before it sleeps.  On a machine where another CPU-bound process runs too, the
spinning thread holds a core that the thread it waits for needs, and every barrier waits for the scheduler.
Measured (``benchmarks/contention.py``, a 3-round resnet56 -> resnet20 distill on a 2-core Xeon, one
``while True`` process beside it): 342 s at the default against 18 s on the idle machine; 63 s with a
30,000-iteration spin.  Idle, the shorter spin cost 1 % (generator call 2.01 -> 2.03 s, three student steps
0.59 -> 0.59 s, medians of three processes each); 10,000 cost 5 % and ``OMP_WAIT_POLICY=passive`` 39 %.

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


def set_spin_default() -> None:
    """``GOMP_SPINCOUNT=30000`` where no spin is chosen and libgomp has not loaded yet (see above)."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT


def spin_setting() -> str:
    """The OpenMP wait setting of the environment: ``GOMP_SPINCOUNT`` and/or ``OMP_WAIT_POLICY``, or
    "libgomp default"."""
    parts = [f"{k}={os.environ[k]}" for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if k in os.environ]
    return ", ".join(parts) or "libgomp default"


set_spin_default()
