"""Run a calculation in a separate process with a wall-time limit.

A hung SCF, a segfault in a compiled library or a runaway MD run is killed and becomes a
:class:`~triscale.tools.errors.ToolTimeoutError` / :class:`~triscale.tools.errors.CalculationError` in the
caller, which keeps running. Workers fork from a ``forkserver`` started once and preloaded with ASE and NumPy,
so each call costs tens of milliseconds rather than a fresh interpreter, and forking never copies the
caller's threads (MCP server, job threads) into the child.

A worker never outlives its caller: on Linux it asks the kernel to SIGKILL it when its parent (the forkserver,
which exits with the caller) dies (``prctl(PR_SET_PDEATHSIG)``), and a watchdog thread in the worker exits when
its parent changes or the calling process is gone. At most ``TRISCALE_MAX_WORKERS`` workers (default: the number
of CPUs) run at once per process; a call waiting for a slot still honours its cancel token and wall-time limit.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from triscale.tools.errors import CalculationError, ToolError, ToolInputError, ToolTimeoutError

__all__ = ["CancelToken", "max_workers", "process_alive", "process_start", "run_in_worker"]

_PRELOAD = [
    "numpy",
    "scipy.spatial",
    "ase",
    "ase.io",
    "ase.optimize",
    "ase.md",
    "ase.calculators.emt",
    "triscale.tools.calculation",
]
_ctx_lock = threading.Lock()


def _preload_modules() -> list[str]:
    """Modules the forkserver imports once so that each worker forks warm.

    The foundation model (torch + transformers, seconds to import) is preloaded when torch is installed: it is
    the default calculator once a checkpoint ships, and forking from a server that imported it costs
    nothing per call. ``TRISCALE_WORKER_PRELOAD`` (comma-separated modules) replaces the extra list.
    """
    import importlib.util

    extra = os.environ.get("TRISCALE_WORKER_PRELOAD")
    if extra is not None:
        return _PRELOAD + [m for m in extra.split(",") if m.strip()]
    if importlib.util.find_spec("torch") is not None:
        return [*_PRELOAD, "triscale.foundation"]
    return list(_PRELOAD)


_ctx: Any = None
_slots: threading.BoundedSemaphore | None = None
_slots_n = 0
_active = 0  # workers of this process alive now (for tests and diagnostics)
_PR_SET_PDEATHSIG = 1


def max_workers() -> int:
    """The cap on concurrent worker processes: env ``TRISCALE_MAX_WORKERS``, else the number of CPUs."""
    raw = os.environ.get("TRISCALE_MAX_WORKERS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"TRISCALE_MAX_WORKERS must be a positive integer, got {raw!r}.") from None
        if n < 1:
            raise ValueError(f"TRISCALE_MAX_WORKERS must be a positive integer, got {raw!r}.")
        return n
    return os.cpu_count() or 1


def _worker_slots() -> threading.BoundedSemaphore:
    """The process-wide semaphore, sized when first needed (``TRISCALE_MAX_WORKERS`` is read then)."""
    global _slots, _slots_n
    with _ctx_lock:
        if _slots is None:
            _slots_n = max_workers()
            _slots = threading.BoundedSemaphore(_slots_n)
        return _slots


@contextlib.contextmanager
def _user_main_hidden():
    """Keep multiprocessing from re-importing the user's ``__main__`` in the forkserver and its workers.

    Workers only run importable library functions. Left alone, forkserver/spawn re-run the caller's script in
    every worker: a script without an ``if __name__ == "__main__":`` guard repeats its own tool calls there, and
    ``python - < script.py`` fails outright (there is no file to import).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved_file = main.__dict__.pop("__file__", _MISSING)
    saved_spec = main.__dict__.get("__spec__", _MISSING)
    main.__spec__ = None
    try:
        yield
    finally:
        if saved_file is not _MISSING:
            main.__file__ = saved_file
        if saved_spec is _MISSING:
            main.__dict__.pop("__spec__", None)
        else:
            main.__spec__ = saved_spec


_MISSING = object()


def _context():
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            method = os.environ.get("TRISCALE_WORKER_START", "forkserver")
            if method not in mp.get_all_start_methods():
                method = "spawn"
            ctx = mp.get_context(method)
            if method == "forkserver":
                ctx.set_forkserver_preload(_preload_modules())
            _ctx = ctx
        return _ctx


class CancelToken:
    """Set from another thread to kill the running worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def process_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None if it is gone (or no /proc)."""
    try:
        text = open(f"/proc/{int(pid)}/stat").read()  # noqa: SIM115 - tiny read
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: Any, start: int | None = None) -> bool:
    """Whether process ``pid`` runs and, when ``start`` is given, is the same process (a reused pid has another
    start time). Without /proc, whether the pid exists."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if os.path.isdir("/proc"):
        started = process_start(pid)
        return started is not None and (start is None or started == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _die_with_parent(caller_pid: int, caller_start: int | None) -> None:
    """Make this worker end when its parent or the calling process ends (no orphans burning CPU)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
            pass
    if os.getppid() != parent or not process_alive(caller_pid, caller_start):  # died before prctl took hold
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent or not process_alive(caller_pid, caller_start):
                os._exit(1)

    threading.Thread(target=watch, name="triscale-worker-watchdog", daemon=True).start()


def _child(conn, fn, args, kwargs, caller_pid=None, caller_start=None) -> None:
    if caller_pid is not None:
        _die_with_parent(caller_pid, caller_start)
    # stdout may be an MCP stdio channel in the parent: send every library print to stderr instead.
    try:
        os.dup2(2, 1)
    except OSError:  # pragma: no cover
        pass
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        result = fn(*args, **kwargs)
        conn.send(("ok", result))
    except ToolError as e:
        conn.send(("tool_error", (type(e).__name__, e.message, e.hint)))
    except BaseException as e:  # noqa: BLE001 - everything must reach the caller as a message
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        conn.send(("error", (type(e).__name__, str(e), "".join(tb[-3:]))))
    finally:
        conn.close()


def run_in_worker(
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float | None = 600.0,
    cancel: CancelToken | None = None,
    label: str = "calculation",
    limit_s: float | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``fn(*args, **kwargs)`` in a worker process and return its result.

    ``fn`` must be importable by name (a module-level function) and its arguments and result picklable.
    ``limit_s`` is the limit named in the error (the tool call's, when ``timeout_s`` is what is left of it).
    Raises ToolTimeoutError past ``timeout_s``, CalculationError if the worker fails or dies, and re-raises a
    ToolError raised in the worker as the same class. Time spent waiting for a free worker slot counts against
    ``timeout_s``, and a cancel while waiting ends the wait.
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ToolInputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}.")
    t0 = time.monotonic()
    slots = _worker_slots()
    while True:
        _check_cancel_and_time(cancel, label, timeout_s, limit_s, t0, waiting=True)
        remaining = None if timeout_s is None else timeout_s - (time.monotonic() - t0)
        if slots.acquire(timeout=0.2 if remaining is None else min(0.2, max(remaining, 0.001))):
            break
    try:
        return _run_in_slot(fn, args, kwargs, timeout_s, cancel, label, limit_s, t0)
    finally:
        slots.release()


def _check_cancel_and_time(cancel, label, timeout_s, limit_s, t0, waiting=False) -> None:
    if cancel is not None and cancel.cancelled:
        raise CalculationError(f"The {label} was cancelled" + (" while waiting for a free worker." if waiting else "."))
    if timeout_s is not None and timeout_s - (time.monotonic() - t0) <= 0:
        where = f" (waiting for one of the {_slots_n} worker slots, all busy)" if waiting else ""
        raise ToolTimeoutError(
            f"The {label} exceeded its {limit_s or timeout_s:g} s wall-time limit{where} and was stopped.",
            hint="Use a cheaper method, a smaller structure or fewer steps, or submit it as a job with a longer limit.",
        )


def _run_in_slot(fn, args, kwargs, timeout_s, cancel, label, limit_s, t0) -> Any:
    global _active
    from triscale.tools import errors as _errors

    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    me = os.getpid()
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs, me, process_start(me)), daemon=True)
    with _user_main_hidden():  # the forkserver itself starts on the first start()
        proc.start()
    with _ctx_lock:
        _active += 1
    send.close()
    msg = None
    try:
        while True:
            _check_cancel_and_time(cancel, label, timeout_s, limit_s, t0)
            remaining = None if timeout_s is None else timeout_s - (time.monotonic() - t0)
            wait = 0.2 if remaining is None else min(0.2, max(remaining, 0.0))
            if recv.poll(wait):
                try:
                    msg = recv.recv()
                except EOFError:
                    msg = None
                break
            if not proc.is_alive() and not recv.poll(0):
                break
    finally:
        if proc.is_alive():
            if msg is None:
                proc.kill()
            proc.join(5)
            if proc.is_alive():  # pragma: no cover
                proc.kill()
        proc.join(1)
        recv.close()
        with _ctx_lock:
            _active -= 1
    if msg is None:
        code = proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise CalculationError(
            f"The {label} crashed (worker process ended with {how}) without a result.",
            hint="Try another method or a different starting structure.",
        )
    kind, payload = msg
    if kind == "ok":
        return payload
    if kind == "tool_error":
        name, message, hint = payload
        cls = getattr(_errors, name, ToolError)
        raise cls(message, hint=hint)
    name, message, tail = payload
    raise CalculationError(f"The {label} failed: {name}: {message}")


# Probes for the tests of worker isolation: a function that never returns and one that dies hard.


def sleep_forever(seconds: float = float("inf")) -> None:  # pragma: no cover - used to test timeouts
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.05)


def crash_hard() -> None:  # pragma: no cover - used to test crash handling
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
