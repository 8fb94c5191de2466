"""Python's cyclic garbage collector, tuned for a worker that holds thousands of connections.

With the default thresholds (700, 10, 10) a worker with 5,000 open streams ran
a full collection every two seconds or so while it fanned messages out, each
walking every tracked object of every stream (400 to 500 ms at 5,000 streams,
over a second at 10,000) and each finding nothing to free: the delivery that
waited behind one is what set the p99. The objects it walked are long-lived
(a stream's request, response and waiter) and hold no garbage cycles; what a
full collection is for, cycles that outlived the young generations, is rare
here. So: a young generation of 50,000 objects (short-lived objects are freed by
their reference counts before a collection catches them alive and promotes
them), and what exists when the worker has started (modules, the app, the
routes: as long-lived as the process) frozen out of every collection.
docs/performance.md has the figures (bench/push_scale.py).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)


def tune_after_startup() -> None:
    """Collect once, freeze what is left (it lives as long as the worker), set THRESHOLDS."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
