"""Worker probes for the tests of worker isolation (a function that never returns, one that dies hard)."""

from __future__ import annotations

import math


def sleep_forever(seconds: float = math.inf) -> None:  # pragma: no cover - used to test timeouts
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.05)


def crash_hard() -> None:  # pragma: no cover - used to test crash handling
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
