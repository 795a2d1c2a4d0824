"""The app's files: one output folder per app (swept, removed at exit), and media URLs refused unless allowlisted."""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import gradio as gr
import httpx
from gradio_client import utils as client_utils

log = logging.getLogger(__name__)

URL_FETCH_TIMEOUT_S = 30.0
URL_MEDIA_HINT = "--allow-url-media HOST / QVL_ALLOW_URL_MEDIA"
# An app's output folder, in the temp folder: qvl-outputs-<pid>-<mkdtemp's 8 characters>. The pid lets a starting
# app remove the folders of processes that ended without cleaning up (SIGKILL, a crash, a power cut).
OUTPUT_PREFIX = "qvl-outputs-"
OWNED_ROOT = re.compile(r"qvl-outputs-(\d+)-[a-z0-9_]{8}")
LEGACY_ROOT = re.compile(r"qvl-outputs-[a-z0-9_]{8}")  # named before the pid was: only its age tells
# /proc gives a process's start time to 1/100 s and the boot time to 1 s: a process started this much after a
# folder was last changed cannot have made it (its pid was reused).
START_TIME_SLACK_S = 2.0


def sweep(root: Path, max_age_s: float, now: float | None = None) -> list[Path]:
    """Delete the entries of `root` last modified more than `max_age_s` ago; returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for entry in list(root.iterdir()) if root.is_dir() else []:
        try:
            if now - entry.lstat().st_mtime <= max_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        except FileNotFoundError:
            continue  # a concurrent sweep got there first
    return removed


def sweep_interval(ttl_s: float) -> float:
    """Sweep ten times per lifetime (a file lives at most 1.1 x ttl), at least once a second."""
    return max(1.0, ttl_s / 10)


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where there is no /proc or no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def owner_alive(pid: int, changed_at: float) -> bool:
    """Whether the process that made a folder last changed at `changed_at` still runs as `pid`.

    A zombie counts as ended; so does a process that started after the folder changed (the pid was reused).
    Without /proc only the pid is checked, so a reused pid keeps a dead process's folder until it ends too.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    except (OverflowError, OSError):
        return False  # not a pid at all
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    started = process_start_time(pid)
    return started is None or started <= changed_at + START_TIME_SLACK_S


def sweep_stale_roots(parent: Path, ttl_s: float, now: float | None = None) -> list[Path]:
    """Remove the output folders in `parent` that no running app owns; returns what was removed.

    A folder named for a pid goes when that process has ended; one from before pids were in the name when it
    is older than `ttl_s`. Only real folders of ours that this user owns are touched: a symlink, a file or
    anything named otherwise stays, and nothing is followed out of `parent`.
    """
    now = time.time() if now is None else now
    removed = []
    for entry in list(parent.iterdir()) if parent.is_dir() else []:
        owned = OWNED_ROOT.fullmatch(entry.name)
        if not owned and not LEGACY_ROOT.fullmatch(entry.name):
            continue
        try:
            st = entry.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        stale = not owner_alive(int(owned[1]), st.st_mtime) if owned else now - st.st_mtime > ttl_s
        if stale and remove_tree(entry):
            removed.append(entry)
    return removed


def remove_tree(path: Path) -> bool:
    """Delete a folder and everything in it, never through a symlink; False (and logged) if it could not be."""
    failures = []
    # On Linux rmtree works on file descriptors: a folder swapped for a symlink is refused, links inside are
    # removed as links, never followed.
    shutil.rmtree(path, onerror=lambda _fn, where, exc: failures.append((where, exc[1])))
    for where, exc in failures:
        if not isinstance(exc, FileNotFoundError):  # a concurrent sweep got there first
            log.warning("could not remove %s: %s", where, exc)
            return False
    return True


# The output folders this process made, with the pid that made them: a forked child (ZeroGPU's worker) inherits
# this table and must not delete its parent's folders when it exits.
_live_roots: dict[Path, int] = {}
_live_lock = threading.RLock()  # re-entrant: the SIGTERM handler may run while the main thread holds it
_hooks = {"atexit": False, "sigterm": False}


def remove_own_roots() -> None:
    """Delete every output folder this process made (at exit, or on SIGTERM)."""
    with _live_lock:
        mine = [path for path, pid in _live_roots.items() if pid == os.getpid()]
        for path in mine:
            del _live_roots[path]
    for path in mine:
        remove_tree(path)


def _on_sigterm(previous, signum, frame) -> None:
    remove_own_roots()
    if callable(previous):
        previous(signum, frame)
    else:  # the default: die of SIGTERM as before, now that nothing of ours is left behind
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_exit_hooks() -> None:
    """Delete this process's output folders when it exits normally (atexit) or is asked to stop (SIGTERM).

    A SIGTERM handler can only be set from the main thread: elsewhere this leaves it for a later call. One that
    was already set still runs after ours; a SIGTERM that was ignored stays ignored (the process keeps its files).
    """
    with _live_lock:
        if not _hooks["atexit"]:
            atexit.register(remove_own_roots)
            _hooks["atexit"] = True
        if _hooks["sigterm"] or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_DFL or callable(previous):
            signal.signal(signal.SIGTERM, lambda signum, frame: _on_sigterm(previous, signum, frame))
        _hooks["sigterm"] = True


class OutputRoot:
    """One app's folder for what its tabs write (drawings, JSON, downloads) and the sweeper that deletes them.

    Each app (each build_demo) owns one: a process-wide folder let the app with the shortest lifetime delete
    every other app's files. `ttl_s=None` never sweeps (a tab built on its own, in tests or scripts).
    """

    def __init__(self, ttl_s: float | None = None) -> None:
        self.ttl_s = ttl_s
        self.sweeper_stop = threading.Event()  # set to stop sweeping; stop_sweeper also waits for the thread
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        install_exit_hooks()  # here: the folder itself is made later, often in a request's thread

    @property
    def path(self) -> Path:
        """The folder, made on first use (and made again if something removed it); deleted when the process exits."""
        with self._lock:
            if self._path is None or not self._path.is_dir():
                self._path = Path(tempfile.mkdtemp(prefix=f"{OUTPUT_PREFIX}{os.getpid()}-"))
                with _live_lock:
                    _live_roots[self._path] = os.getpid()
            return self._path

    def close(self) -> None:
        """Stop sweeping and delete the folder with everything in it (the app's server has stopped)."""
        self.stop_sweeper()
        with self._lock:
            path, self._path = self._path, None
            if path is not None:
                with _live_lock:
                    _live_roots.pop(path, None)
                remove_tree(path)

    def new_dir(self, prefix: str) -> Path:
        """A fresh folder for one request's output files."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.path))

    @property
    def sweeping(self) -> bool:
        return self._sweeper is not None and self._sweeper.is_alive()

    def start_sweeper(self) -> None:
        """Sweep every `sweep_interval(ttl_s)` seconds in a daemon thread until stopped; a no-op while one runs.

        Starting also removes the output folders that ended processes left in the temp folder.
        """
        if self.ttl_s is None:
            return
        try:
            sweep_stale_roots(Path(tempfile.gettempdir()), self.ttl_s)
        except OSError:
            log.exception("sweeping stale output folders failed")
        with self._lock:
            if self.sweeping and not self.sweeper_stop.is_set():
                return
            if self._sweeper is not None:
                self._sweeper.join()  # stopped but not yet out of its wait: one sweeper at a time
            self.sweeper_stop.clear()
            self._sweeper = threading.Thread(target=self._sweep_until_stopped, args=(self.ttl_s,),
                                             name="qvl-sweeper", daemon=True)
            self._sweeper.start()

    def stop_sweeper(self) -> None:
        """Stop sweeping and wait for the thread (a sweep under way finishes first)."""
        self.sweeper_stop.set()
        if self._sweeper is not None:
            self._sweeper.join()

    def _sweep_until_stopped(self, ttl_s: float) -> None:
        while not self.sweeper_stop.wait(sweep_interval(ttl_s)):
            root = self._path  # not `path`: a sweep never creates the folder
            try:
                if root is not None:
                    sweep(root, ttl_s)
            except OSError:
                log.exception("sweeping the output folder %s failed", root)


def guard_url_media(demo: gr.Blocks, allow_hosts: tuple[str, ...] = (), max_bytes: int | None = None) -> None:
    """Refuse media given as URLs (API FileData with an http(s) path) unless the host is allowlisted.

    Gradio downloads such URLs itself (public addresses only). Here every component's download hook is
    replaced: a host outside `allow_hosts` gets a clear error and is never contacted; an allowed host is
    fetched without redirects (a redirect could leave the allowlist), up to `max_bytes`.
    """
    allowed = {h.lower() for h in allow_hosts}
    for block in demo.blocks.values():
        original = block.async_move_resource_to_block_cache

        async def guarded(url_or_path, _block=block, _original=original):
            if url_or_path is None or not client_utils.is_http_url_like(str(url_or_path)):
                return await _original(url_or_path)
            url = str(url_or_path)
            host = (urlparse(url).hostname or "").lower()
            if host not in allowed:
                raise gr.Error(f"Media from URLs is turned off for {host or url!r}: upload the file instead "
                               f"(an admin can allow hosts with {URL_MEDIA_HINT}).", print_exception=False)
            return await _fetch(url, Path(_block.GRADIO_CACHE), _block, max_bytes)

        block.async_move_resource_to_block_cache = guarded


async def _fetch(url: str, cache: Path, block, max_bytes: int | None) -> str:
    """Download `url` into a fresh folder of `cache`; on any failure the folder is removed, not left behind."""
    name = client_utils.strip_invalid_filename_characters(Path(urlparse(url).path).name) or "download"
    folder = Path(tempfile.mkdtemp(prefix="url-", dir=cache))
    target = folder / name
    size = 0
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=URL_FETCH_TIMEOUT_S) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise gr.Error(f"Could not fetch {url}: HTTP {response.status_code}.", print_exception=False)
                with target.open("wb") as f:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if max_bytes is not None and size > max_bytes:
                            raise gr.Error(f"{url} is over the upload limit of {max_bytes} bytes "
                                           "(--max-file-size).", print_exception=False)
                        f.write(chunk)
    except httpx.HTTPError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise gr.Error(f"Could not fetch {url}: {type(exc).__name__}.", print_exception=False) from None
    except BaseException:  # our own errors above, and a cancelled request: nothing of it may stay on disk
        shutil.rmtree(folder, ignore_errors=True)
        raise
    block.temp_files.add(str(target))
    return str(target)
