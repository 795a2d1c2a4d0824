"""Web-server settings (`qvl serve` / app.py flags): host, port, login, upload size, queue; plus the shared flags."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, replace

from qvl_core.engine.backend import BackendOptions
from qvl_core.engine.loading import LoadOptions
from qvl_core.errors import UserError
from qvl_core.flags import add_limit_args, add_model_args, backend_options, limits_from, load_options
from qvl_core.settings import Limits, env_int
from qvl_core.tasks.live_browser import parse_hosts

DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "200mb"
DEFAULT_QUEUE_SIZE = 64
# Requests the GPU queue runs at once: 1 in process (one GPU), more against a server so that it can batch them.
DEFAULT_CONCURRENCY = {"transformers": 1, "openai": 16}
MAX_CONCURRENCY = 256
# Uploads and the files the tabs write are deleted this long after they were made (checked every tenth of it).
DEFAULT_CACHE_TTL_S = 24 * 3600
# --max-file-size: a whole number and a unit, as Gradio reads it (1 kb = 1024 b).
FILE_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_FILE_SIZE = re.compile(r"(\d+)\s*([a-z]*)")


def parse_file_size(text: str | int) -> int:
    """'200mb' -> bytes. We parse it ourselves: Gradio's private helper gave None for junk, which left URL
    media without any size cap."""
    match = _FILE_SIZE.fullmatch(str(text).strip().lower())
    if match is None or match.group(2) not in ("", *FILE_SIZE_UNITS) or int(match.group(1)) <= 0:
        raise UserError(f"--max-file-size must be a positive whole number with a unit (b, kb, mb, gb, tb), "
                        f"e.g. 200mb; got {text!r} (env QVL_MAX_FILE_SIZE).")
    return int(match.group(1)) * FILE_SIZE_UNITS[match.group(2) or "b"]


@dataclass(frozen=True)
class ServeConfig:
    load: LoadOptions
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    share: bool = False
    auth: tuple[str, str] | None = None
    max_file_size: str = DEFAULT_MAX_FILE_SIZE
    queue_size: int = DEFAULT_QUEUE_SIZE
    limits: Limits = field(default_factory=Limits.from_env)  # the backend's own; the tabs read them from it
    cache_ttl_s: int = DEFAULT_CACHE_TTL_S
    # Hosts whose URLs may be fetched as media through the API; empty: URLs are refused.
    allow_url_media: tuple[str, ...] = ()
    backend: BackendOptions | None = None  # None: the in-process model described by `load`
    concurrency: int = 1  # requests the shared GPU queue runs at once (--concurrency)
    # The Agent tab's live browser (--agent-browser): off by default; it may open loopback pages and these hosts.
    agent_browser: bool = False
    agent_browser_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_file_size(self.max_file_size)  # junk fails here, with the flag's name, not later as "no limit"

    @property
    def max_file_bytes(self) -> int:
        """The upload limit in bytes: Gradio's uploads and our URL media fetches both hold to it."""
        return parse_file_size(self.max_file_size)

    def backend_options(self) -> BackendOptions:
        """How to open this app's backend: `backend` (or the in-process `load`), with this config's `limits`."""
        return replace(self.backend or BackendOptions(load=self.load), limits=self.limits)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_serve_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--concurrency", type=int, default=env_int("QVL_CONCURRENCY", 0) or None,
                   help="requests run at once through the shared GPU queue (env QVL_CONCURRENCY; default 1 in "
                        "process, 16 with --backend openai so the server can batch them)")
    p.add_argument("--host", default=_env("QVL_HOST", "127.0.0.1"), help="env QVL_HOST (0.0.0.0 to listen on all)")
    p.add_argument("--port", type=int, default=int(_env("QVL_PORT", str(DEFAULT_PORT)) or DEFAULT_PORT),
                   help="env QVL_PORT")
    p.add_argument("--share", action="store_true", default=_env("QVL_SHARE", "") in ("1", "true"),
                   help="create a public gradio.live link (env QVL_SHARE=1)")
    p.add_argument("--auth", default=_env("QVL_AUTH"), help="USER:PASS to require a login (env QVL_AUTH)")
    p.add_argument("--max-file-size", default=_env("QVL_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
                   help="largest upload, e.g. 200mb (env QVL_MAX_FILE_SIZE)")
    p.add_argument("--queue-size", type=int,
                   default=int(_env("QVL_QUEUE_SIZE", str(DEFAULT_QUEUE_SIZE)) or DEFAULT_QUEUE_SIZE),
                   help="requests that may wait for the GPU before new ones are refused (env QVL_QUEUE_SIZE)")
    add_limit_args(p)
    p.add_argument("--cache-ttl", type=int, default=env_int("QVL_CACHE_TTL", DEFAULT_CACHE_TTL_S),
                   help="seconds after which uploads and output files are deleted (env QVL_CACHE_TTL)")
    p.add_argument("--allow-url-media", default=_env("QVL_ALLOW_URL_MEDIA", ""),
                   help="comma-separated hosts whose media URLs the API may fetch; default none: URLs are refused "
                        "(env QVL_ALLOW_URL_MEDIA)")
    p.add_argument("--agent-browser", action="store_true", default=_env("QVL_AGENT_BROWSER", "") in ("1", "true"),
                   help="let the Agent tab drive a headless Chromium page (needs Playwright and Chromium; env "
                        "QVL_AGENT_BROWSER=1)")
    p.add_argument("--agent-browser-hosts", default=_env("QVL_AGENT_BROWSER_HOSTS", ""),
                   help="comma-separated hosts the live browser may open besides loopback; default none (env "
                        "QVL_AGENT_BROWSER_HOSTS)")


def concurrency_from(ns: argparse.Namespace) -> int:
    value = ns.concurrency or DEFAULT_CONCURRENCY[ns.backend]
    if not 1 <= value <= MAX_CONCURRENCY:
        raise UserError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {value}.")
    return value


def serve_config(ns: argparse.Namespace) -> ServeConfig:
    auth = None
    if ns.auth:
        user, sep, password = ns.auth.partition(":")
        if not sep or not user or not password:
            raise UserError("--auth must be USER:PASS (both non-empty).")
        auth = (user, password)
    if ns.queue_size < 1:
        raise UserError(f"--queue-size must be at least 1, got {ns.queue_size}.")
    if ns.cache_ttl < 1:
        raise UserError(f"--cache-ttl must be at least 1 second, got {ns.cache_ttl}.")
    hosts = tuple(h.strip().lower() for h in (ns.allow_url_media or "").split(",") if h.strip())
    limits = limits_from(ns)  # the one Limits of this app: the backend checks with it, the tabs read it there
    browser_hosts = parse_hosts(ns.agent_browser_hosts)
    if browser_hosts and not ns.agent_browser:
        raise UserError("--agent-browser-hosts needs --agent-browser (the live browser is off without it).")
    return ServeConfig(load=load_options(ns), host=ns.host, port=ns.port, share=ns.share, auth=auth,
                       max_file_size=ns.max_file_size, queue_size=ns.queue_size, limits=limits,
                       cache_ttl_s=ns.cache_ttl, allow_url_media=hosts, backend=backend_options(ns, limits),
                       concurrency=concurrency_from(ns), agent_browser=ns.agent_browser,
                       agent_browser_hosts=browser_hosts)
