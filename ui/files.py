"""The app's files: one output folder per app, swept on a schedule, and media URLs refused unless allowlisted."""

from __future__ import annotations

import logging
import shutil
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

    @property
    def path(self) -> Path:
        """The folder, made on first use (and made again if something removed it)."""
        with self._lock:
            if self._path is None or not self._path.is_dir():
                self._path = Path(tempfile.mkdtemp(prefix="qvl-outputs-"))
            return self._path

    def new_dir(self, prefix: str) -> Path:
        """A fresh folder for one request's output files."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.path))

    @property
    def sweeping(self) -> bool:
        return self._sweeper is not None and self._sweeper.is_alive()

    def start_sweeper(self) -> None:
        """Sweep every `sweep_interval(ttl_s)` seconds in a daemon thread until stopped; a no-op while one runs."""
        if self.ttl_s is None:
            return
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
