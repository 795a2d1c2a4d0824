"""An app's output files (drawings of users' images) do not outlive it: removed at exit, on SIGTERM, on close,
and by the next app to start when a process died without cleaning up."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, child_env, free_port
from ui.config import ServeConfig
from ui.files import OutputRoot, sweep_stale_roots
from ui.shell import build_demo
from ui.tabs.grounding import GroundingTab

SHAPES = ROOT / "assets" / "shapes.png"
BOXES = '[{"bbox_2d": [10, 10, 100, 100], "label": "box"}]'
NO_SUCH_PID = 2**22 + 1  # above Linux's largest pid_max: never a running process
APP_START_TIMEOUT_S = 180


def leftovers(parent: Path) -> list[Path]:
    return sorted(parent.glob("qvl-outputs-*"))


def make_root(parent: Path, name: str, *, mtime: float | None = None) -> Path:
    """A folder named like an output folder, holding one drawing."""
    folder = parent / name
    (folder / "qvl-chat-abcdefgh").mkdir(parents=True)
    (folder / "qvl-chat-abcdefgh" / "grounding.png").write_bytes(b"a user's image")
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


def grounding_output(demo) -> Path:
    """Run the app's own Grounding tab on shapes.png; the JSON download it wrote into the app's folder."""
    tab = next(f.fn.__self__ for f in demo.fns.values() if isinstance(getattr(f.fn, "__self__", None), GroundingTab))
    *_, last = tab.run(str(SHAPES), "Detect", "box", "", 1280, 256, 0.0, 1.0, 0, 1.05, -1)
    return Path(last[3])


def test_a_start_removes_only_the_output_folders_of_ended_processes(tmp_path):
    """Regression: each process swept only its own folder, so every process that stopped without cleaning up
    (killed, crashed) left users' drawings in the temp folder for good."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    parent = tmp_path / "tmp"
    parent.mkdir()
    now = time.time()
    dead = make_root(parent, f"qvl-outputs-{NO_SUCH_PID}-dead0001")
    reused = make_root(parent, f"qvl-outputs-{os.getpid()}-reused01", mtime=now - 10 * 24 * 3600)  # before we began
    legacy_old = make_root(parent, "qvl-outputs-old_0001", mtime=now - 7200)
    live = make_root(parent, f"qvl-outputs-{os.getpid()}-live0001")
    legacy_new = make_root(parent, "qvl-outputs-new_0001")
    link = parent / f"qvl-outputs-{NO_SUCH_PID}-link0001"
    link.symlink_to(outside, target_is_directory=True)
    a_file = parent / f"qvl-outputs-{NO_SUCH_PID}-file0001"
    a_file.write_text("a file, not a folder")
    others = [make_root(parent, name) for name in (f"qvl-outputs-{NO_SUCH_PID}", f"other-{NO_SUCH_PID}-abcdefgh",
                                                   f"qvl-outputs-{NO_SUCH_PID}-toolong123", "gradio")]

    removed = sweep_stale_roots(parent, ttl_s=3600)

    assert sorted(removed) == sorted([dead, reused, legacy_old])
    assert not any(p.exists() for p in removed)
    for kept in (live, legacy_new, *others):
        assert (kept / "qvl-chat-abcdefgh" / "grounding.png").is_file(), kept
    assert link.is_symlink() and a_file.is_file() and (outside / "keep.txt").is_file()


def test_building_the_app_sweeps_stale_folders_and_closing_it_deletes_its_own(make_session, monkeypatch, tmp_path):
    """Regression: neither happened; a closed app's drawings stayed until the process ended, and then for good."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = make_root(tmp_path, f"qvl-outputs-{NO_SUCH_PID}-dead0001")
    live = make_root(tmp_path, f"qvl-outputs-{os.getpid()}-live0001")  # another app of this process
    session = make_session("qwen2_5_vl", BOXES)
    demo = build_demo(session, ServeConfig(load=session.options, cache_ttl_s=3600))
    try:
        assert not dead.exists() and live.is_dir()
        written = grounding_output(demo)
        assert written.is_file() and written.parent.parent.parent == tmp_path
    finally:
        demo.close()
    assert not written.parent.parent.exists()
    assert leftovers(tmp_path) == [live]


def test_an_output_root_deletes_its_folder_on_close_and_makes_a_new_one_after(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    files = OutputRoot()
    first = files.new_dir("qvl-ground-")
    files.close()
    assert not first.exists() and leftovers(tmp_path) == []
    second = files.new_dir("qvl-ground-")
    assert second.is_dir() and second.parent.name.startswith(f"qvl-outputs-{os.getpid()}-")
    files.close()


EXIT_SCRIPT = """
import sys
from pathlib import Path
from qvl_core.engine.loading import LoadOptions
from qvl_core.engine.local import ModelSession
from tests.test_output_cleanup import grounding_output
from ui.config import ServeConfig
from ui.shell import build_demo

session = ModelSession(LoadOptions(model=sys.argv[1], device="cpu"))
session.load()
demo = build_demo(session, ServeConfig(load=session.options))
written = grounding_output(demo)
assert written.is_file()
print(written)
"""  # and exits without closing anything


def test_a_process_that_exits_leaves_no_output_files(run_python, ckpt_dir, tmp_path):
    """Regression: the app's output folder (users' drawings) stayed in the temp folder after the process ended."""
    result = run_python("-c", EXIT_SCRIPT, str(ckpt_dir("qwen2_5_vl", BOXES)), env=child_env(TMPDIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    written = Path(result.stdout.strip().splitlines()[-1])
    assert written.is_relative_to(tmp_path) and written.name == "detections.json"
    assert not written.exists() and leftovers(tmp_path) == []


@pytest.mark.timeout(300)
def test_a_served_app_stopped_with_sigterm_leaves_no_output_files(spawn_python, ckpt_dir, tmp_path):
    """Regression: `kill PID` (how services and containers are stopped) ended the app without any cleanup, so the
    drawings of users' images it had written stayed in the temp folder for good."""
    from gradio_client import Client, handle_file

    port = free_port()
    proc = spawn_python("app.py", "--model", str(ckpt_dir("qwen2_5_vl", BOXES)), "--device", "cpu",
                        "--port", str(port), log=tmp_path / "app.log", env=child_env(TMPDIR=str(tmp_path)))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + APP_START_TIMEOUT_S
    while True:
        assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
        try:
            if httpx.get(url + "/gradio_api/info", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.5)
    client = Client(url, verbose=False)
    client.predict(message={"text": "Where is the box?", "files": [handle_file(str(SHAPES))]}, api_name="/chat")
    client.close()
    drawings = list(tmp_path.glob("qvl-outputs-*/qvl-chat-*/grounding.png"))
    assert len(drawings) == 1, "the chat answer's boxes were not drawn into the app's folder"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # still stopped by the signal, as before
    assert leftovers(tmp_path) == []
