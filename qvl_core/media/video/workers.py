"""Watched decoder processes: run a job in a worker, kill it when it stalls or crashes, fall back in order."""
from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from qvl_core.errors import UserError
from qvl_core.media.video.readers import _Failed
from qvl_core.settings import env_float

log = logging.getLogger(__name__)

# A decoder that reports nothing (no frame, no progress) for this long is killed and the next one tried.
STALL_TIMEOUT_S = env_float("QVL_VIDEO_STALL_SECONDS", 30.0)
# Decoder processes alive at once, busy or idle: each can hold a few hundred MB and every core (PyAV runs
# several decoders per process), so more requests than this wait for a free one instead of starting more.
MAX_WORKERS = 4
MAX_IDLE_WORKERS = 2
JOBS_PER_WORKER = 64  # then a fresh process: decoders have been seen to grow memory over many files


def _run(order: list[tuple[str, type]], path: Path, job: Callable, args: tuple,
         on_message: Callable[[tuple], None]) -> tuple[Any, str]:
    """Run `job` with each (name, reader) in `order` until one succeeds. UserErrors (the file's fault) stop at once."""
    failures: list[tuple[str, str]] = []
    for name, reader in order:
        module = getattr(reader, "module", None)
        if module and importlib.util.find_spec(module) is None:
            failures.append((name, "not installed"))
            continue
        try:
            return _call(job, (reader, str(path), *args), on_message), name
        except _Failed as exc:
            log.info("video decoder %s failed on %s: %s", name, path.name, exc)  # the UserError below sums up
            failures.append((name, str(exc)))
    tried = [n for n, why in failures if why != "not installed"]
    if not tried:
        names = ", ".join(n for n, _reader in order)
        raise UserError(f"No video decoder is installed to read {path.name!r} (tried {names}).")
    first = dict(failures)[tried[0]]
    also = f" (also tried: {', '.join(tried[1:])})" if len(tried) > 1 else ""
    raise UserError(f"{first[:1].upper()}{first[1:]}{also}.")


class _Worker:
    """One decoder process: jobs go down one pipe, progress, frames and the result come back up another."""

    def __init__(self, modules: tuple[str, ...] = ()) -> None:
        """Start the process; it imports `modules` (decoders) first, while the caller goes on."""
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # same imports as here
        boot = ("import sys; from qvl_core.media.video.workers import _worker_main; "
                "_worker_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])")
        # FFmpeg, OpenCV and decord write their complaints about a bad file straight to the process's stderr
        # (several lines per decoder tried). They go to this module's debug log, or nowhere when it is off,
        # so a terminal shows the one error that sums them up; `qvl --verbose` shows them.
        verbose = log.isEnabledFor(logging.DEBUG)
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", boot, str(job_r), str(res_w), *modules],
                                         pass_fds=(job_r, res_w), env=env, stdin=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE if verbose else subprocess.DEVNULL)
        finally:
            os.close(job_r)
            os.close(res_w)
        if verbose:
            threading.Thread(target=_log_stderr, args=(self.proc,), daemon=True).start()
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.jobs_done = 0
        self.closed = False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        """Close the pipes; the worker exits when it sees its job pipe closed, and is reaped in the background."""
        global _live
        with _pool:
            if self.closed:
                return
            self.closed = True
            _live -= 1
            _pool.notify()  # a job waiting for a free process may start one now
        for conn in (self.jobs, self.results):
            conn.close()
        if self.proc.poll() is None:
            threading.Thread(target=_reap, args=(self.proc,), daemon=True).start()


def _log_stderr(proc: subprocess.Popen) -> None:
    for line in proc.stderr:  # ends when the process does
        log.debug("video worker %d: %s", proc.pid, line.decode(errors="replace").rstrip())


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # stuck in a decoder call: it will not notice the closed pipe
        proc.kill()
        proc.wait()


_idle: list[_Worker] = []
_idle_lock = threading.RLock()  # reentrant: closing a dead idle worker under it counts it out under it too
_pool = threading.Condition(_idle_lock)  # notified when a worker goes idle or a process ends
_live = 0  # worker processes started and not yet closed (busy or idle), at most MAX_WORKERS


def _new_worker(modules: tuple[str, ...] = ()) -> _Worker:
    """Start a worker, counted against MAX_WORKERS. Call with _pool held and a free place checked."""
    global _live
    worker = _Worker(modules)
    _live += 1
    return worker


def _checkout() -> _Worker:
    """An idle worker, else a new one, else (MAX_WORKERS busy) wait for either."""
    with _pool:
        while True:
            while _idle:
                worker = _idle.pop()
                if worker.proc.poll() is None:
                    return worker
                worker.close()
            if _live < MAX_WORKERS:
                return _new_worker()
            _pool.wait()


def _checkin(worker: _Worker) -> None:
    worker.jobs_done += 1
    with _pool:
        if worker.jobs_done < JOBS_PER_WORKER and len(_idle) < MAX_IDLE_WORKERS:
            _idle.append(worker)
            _pool.notify()
            return
    worker.close()  # the worker exits when its job pipe closes


def _prestart(modules: tuple[str, ...]) -> bool:
    """Start an idle worker that imports `modules` now, unless one is idle or the pool is full. Returns at once."""
    with _pool:
        if _idle or _live >= MAX_WORKERS:
            return False
        try:
            _idle.append(_new_worker(modules))
        except OSError as exc:  # no processes here: the first video decodes in-process (see _call)
            log.warning("video worker could not start: %s", exc)
            return False
        _pool.notify()
        return True


@atexit.register
def _shutdown_workers() -> None:
    with _idle_lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.close()


def _call(job: Callable, args: tuple, on_message: Callable[[tuple], None]) -> Any:
    """Run one job in a worker; kill it if it goes quiet for STALL_TIMEOUT_S or dies, then report _Failed."""
    reader, name = getattr(args[0], "name", "decoder"), Path(args[1]).name or "(warm-up)"
    worker = None
    for attempt in range(2):  # an idle worker may have died since its last job: one retry with a new one
        try:
            worker = _checkout()
            worker.jobs.send((job, args))
            break
        except OSError as exc:
            if worker is not None:
                worker.kill()
                worker = None
            if attempt:  # no processes allowed here: decode in this process, without the watchdog
                log.warning("video worker process unavailable (%s); decoding in-process", exc)
                return _run_inline(job, args, on_message)
    finished = False
    try:
        while True:
            if not worker.results.poll(STALL_TIMEOUT_S):
                raise _Failed(f"decoding {name!r} with {reader} made no progress for {STALL_TIMEOUT_S:.0f} s")
            try:
                kind, payload = worker.results.recv()
            except (EOFError, OSError):
                code = worker.proc.wait()
                raise _Failed(f"decoding {name!r} with {reader} crashed (exit status {code})") from None
            if kind == "msg" and payload[0] == "frame":  # its pixels follow as raw bytes
                filled = []

                def fill(dest: np.ndarray, conn: Connection = worker.results, filled: list = filled) -> None:
                    conn.recv_bytes_into(memoryview(dest).cast("B"))
                    filled.append(True)

                on_message((*payload, fill))
                if not filled:
                    worker.results.recv_bytes()
                continue
            if kind == "msg":
                on_message(payload)
                continue
            finished = True
            if kind == "ok":
                return payload
            if kind == "refused":
                raise UserError(payload)
            raise _Failed(payload)
    finally:
        if finished:
            _checkin(worker)
        else:  # stalled, crashed, or this thread was interrupted mid-job: the process cannot be reused
            worker.kill()


def _run_inline(job: Callable, args: tuple, on_message: Callable[[tuple], None]) -> Any:
    def emit(msg: tuple) -> None:
        if msg[0] == "frame":
            frame = msg[2]

            def fill(dest: np.ndarray) -> None:
                dest[...] = frame

            on_message(("frame", msg[1], frame.shape, fill))
        else:
            on_message(msg)

    try:
        return job(*args, emit=emit)
    except UserError:
        raise
    except Exception as exc:  # any decoder failure means "try the next decoder"
        raise _Failed(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"


def _send(results: Connection, msg: tuple) -> None:
    """Worker side of emit: frames go as a header and then their raw bytes (no pickling of pixels)."""
    if msg[0] == "frame":
        frame = np.ascontiguousarray(msg[2])
        results.send(("msg", ("frame", msg[1], frame.shape)))
        results.send_bytes(memoryview(frame).cast("B"))
    else:
        results.send(("msg", msg))


def _worker_main(job_fd: int, result_fd: int, modules: Sequence[str] = ()) -> None:
    """The worker process: import `modules`, then run jobs until the job pipe closes. Exits if the app that
    started it is gone."""
    for module in modules:  # a prestarted worker: the decoders load before the first video reaches it
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    jobs = Connection(job_fd, writable=False)
    results = Connection(result_fd, readable=False)
    parent = os.getppid()

    def watch_parent() -> None:  # runs even while a decoder call hangs (they release the GIL)
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    while True:
        try:
            job, args = jobs.recv()
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the job names a module this process cannot import
            results.send(("failed", f"could not start: {_describe(exc)}"))
            continue
        try:
            result = job(*args, emit=partial(_send, results))
        except UserError as exc:
            results.send(("refused", str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported to the app, which tries the next decoder
            results.send(("failed", _describe(exc)))
        else:
            results.send(("ok", result))
