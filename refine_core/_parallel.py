"""How the compiled kernels run in parallel: numba's own work queue, one kernel at a time.

numba's default OpenMP layer, once started, makes torch (which brings its own OpenMP runtime)
about 30 times slower in the same process whenever a model is first used after a kernel ran
(measured: 300 MiniLM embeddings 1.1 s before, 35 s after; a sweep with a second model, or the
test suite, meets this). The ``workqueue`` layer does not interfere and runs these kernels as
fast; it must not be entered from two threads at once, so every kernel call holds
:data:`KERNEL_LOCK`. Set ``NUMBA_THREADING_LAYER`` to choose another layer.
"""

from __future__ import annotations

import os
import threading

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]  # set at run time, not in the stubs

KERNEL_LOCK = threading.Lock()
