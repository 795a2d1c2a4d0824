"""Files and network of the launched app: only uploads are served, media URLs are refused unless allowlisted,
uploads and outputs are deleted on a schedule, and --auth keeps strangers out."""

from __future__ import annotations

import http.server
import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from tests.conftest import ROOT
from ui import files as app_files
from ui.config import ServeConfig
from ui.tabs.grounding import GroundingTab

SHAPES = ROOT / "assets" / "shapes.png"
BOXES = '[{"bbox_2d": [10, 10, 100, 100], "label": "box"}]'


@pytest.fixture(scope="module")
def served(make_session, launch_app):
    """Launch build_demo(session, config) with extra launch settings (launch_app closes it at the end)."""

    def launch(answer: str = BOXES, launch_extra: dict | None = None, **config):
        session = make_session("qwen2_5_vl", answer)
        return launch_app(session, ServeConfig(load=session.options, **config), **(launch_extra or {}))

    return launch


@pytest.fixture(scope="module")
def app(served):
    return served()


@pytest.fixture
def media_server():
    """A local HTTP server serving one PNG; `hits` lists every path anyone asked it for."""
    hits: list[str] = []
    png = SHAPES.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()


def _file_url(demo, path: str) -> str:
    return demo.local_url.rstrip("/") + "/gradio_api/file=" + path


def test_file_route_serves_uploads_and_nothing_else(app, tmp_path, request):
    base = app.local_url.rstrip("/")
    uploaded = httpx.post(base + "/gradio_api/upload",
                          files={"files": ("shapes.png", SHAPES.read_bytes(), "image/png")}).json()[0]
    assert httpx.get(_file_url(app, uploaded)).content == SHAPES.read_bytes()  # the control: uploads are served

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    # Upload folders are named by content hash (shared by every run): a unique name, removed at the end.
    link = Path(uploaded).parent / f"innocent-{uuid.uuid4().hex}.txt"
    os.symlink(secret, link)  # a link planted next to an upload must not lead out of the cache
    request.addfinalizer(lambda: link.unlink(missing_ok=True))
    probes = [
        "/etc/passwd", "%2Fetc%2Fpasswd", "//etc/passwd",
        "../../../../../../etc/passwd", "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        uploaded + "/../../../../../etc/passwd", str(Path(uploaded).parent) + "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        str(ROOT / "qvl_core" / "config.py"), str(ROOT / "app.py"), str(ROOT / "assets" / "shapes.png"),
        str(secret), str(link), str(Path.home() / ".bashrc"),
    ]
    for probe in probes:
        response = httpx.get(_file_url(app, probe))
        assert response.status_code in (403, 404), f"{probe} was served ({response.status_code})"
        assert b"root:" not in response.content and b"TOP-SECRET" not in response.content, probe


def test_another_sessions_output_files_are_not_served_by_path(app, make_session):
    """The tabs write downloads into the app's output folder; their paths there are never served (only a user's
    own copy in Gradio's cache, under an unguessable hash)."""
    tab = GroundingTab(make_session("qwen2_5_vl", BOXES), files=app.files)
    *_, last = tab.run(str(SHAPES), "Detect", "box", "", 1280, 256, 0.0, 1.0, 0, 1.05, -1)
    written = Path(last[3])
    assert written.is_file() and written.is_relative_to(app.files.path)
    for path in (written, written.parent, app.files.path):
        assert httpx.get(_file_url(app, str(path))).status_code in (403, 404), f"{path} was served"


@pytest.mark.parametrize("payload_key", ["path", "url"])
def test_media_urls_are_refused_and_never_fetched(app, media_server, payload_key):
    base, hits = media_server
    client = Client(app.local_url, verbose=False)
    url = f"{base}/evil.png"
    image = {"path": url, "url": url, "meta": {"_type": "gradio.FileData"}} if payload_key == "url" else \
        {"path": url, "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(Exception, match="Media from URLs is turned off for '127.0.0.1'.*QVL_ALLOW_URL_MEDIA"):
        client.predict(image=image, text="box", preset="Detect", api_name="/ground")
    with pytest.raises(Exception, match="Media from URLs is turned off"):
        client.predict(message={"text": "look", "files": [image]}, api_name="/chat")
    with pytest.raises(Exception, match="Media from URLs is turned off for 'example.com'"):
        client.predict(image={"path": "http://example.com/a.png", "meta": {"_type": "gradio.FileData"}},
                       text="box", preset="Detect", api_name="/ground")
    assert hits == []  # nothing left the server
    # The next request works.
    assert client.predict(image=handle_file(str(SHAPES)), text="box", preset="Detect", api_name="/ground")[1]


def test_allowlisted_media_host_is_fetched(served, media_server):
    base, hits = media_server
    demo = served(allow_url_media=("127.0.0.1",))
    client = Client(demo.local_url, verbose=False)
    _, detections = client.predict(image={"path": f"{base}/shapes.png", "meta": {"_type": "gradio.FileData"}},
                                   text="box", preset="Detect", api_name="/ground")
    assert detections[0]["bbox_2d"] and hits == ["/shapes.png"]
    with pytest.raises(Exception, match="turned off for 'localhost'"):  # the allowlist is by host name
        client.predict(image={"path": base.replace("127.0.0.1", "localhost") + "/b.png",
                              "meta": {"_type": "gradio.FileData"}}, text="box", preset="Detect", api_name="/ground")
    assert hits == ["/shapes.png"]


def test_sweep_removes_only_old_outputs(tmp_path):
    old_dir, new_dir, old_file = tmp_path / "qvl-ground-old", tmp_path / "qvl-ground-new", tmp_path / "old.json"
    old_dir.mkdir()
    (old_dir / "detections.json").write_text("{}")
    new_dir.mkdir()
    old_file.write_text("{}")
    past = time.time() - 7200
    for p in (old_dir, old_file):
        os.utime(p, (past, past))
    removed = app_files.sweep(tmp_path, max_age_s=3600)
    assert sorted(p.name for p in removed) == ["old.json", "qvl-ground-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qvl-ground-new"]


@pytest.mark.timeout(180)
def test_uploads_and_outputs_are_deleted_on_schedule(served, make_session):
    """With a 2 s lifetime, an upload (Gradio's cache) and a tab's output file (the app's folder) both disappear."""
    demo = served(cache_ttl_s=2)
    assert demo.delete_cache == (1, 2)
    base = demo.local_url.rstrip("/")
    tab = GroundingTab(make_session("qwen2_5_vl", BOXES), files=demo.files)  # the app's own folder and sweeper
    *_, last = tab.run(str(SHAPES), "Detect", "box", "", 1280, 256, 0.0, 1.0, 0, 1.05, -1)
    written = [Path(last[3]), Path(last[3]).parent]
    upload = Path(httpx.post(base + "/gradio_api/upload",
                             files={"files": ("late.png", SHAPES.read_bytes(), "image/png")}).json()[0])
    assert upload.is_file()
    while upload.exists() or any(p.exists() for p in written):
        time.sleep(0.5)  # the timeout above is the hang guard


def test_auth_refuses_strangers_and_admits_the_user(served):
    demo = served(launch_extra={"auth": ("ann", "s3cret")})
    base = demo.local_url.rstrip("/")
    assert httpx.get(base + "/config").status_code in (401, 403)
    assert httpx.get(base + "/gradio_api/info").status_code in (401, 403)
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types for a refused login
        Client(demo.local_url, verbose=False, auth=("ann", "wrong"))
    reply = Client(demo.local_url, verbose=False, auth=("ann", "s3cret")).predict(
        message={"text": "hi", "files": []}, api_name="/chat")
    assert reply == BOXES


def test_upload_size_limit_is_enforced_and_named(served):
    demo = served(launch_extra={"max_file_size": "10kb"})
    base = demo.local_url.rstrip("/")
    big = (ROOT / "assets" / "receipt.png").read_bytes()
    assert len(big) > 10 * 1024 > SHAPES.stat().st_size
    refused = httpx.post(base + "/gradio_api/upload", files={"files": ("receipt.png", big, "image/png")})
    assert refused.status_code == 413 and "File size exceeded maximum allowed size of 10240 bytes" in refused.text
    ok = httpx.post(base + "/gradio_api/upload", files={"files": ("shapes.png", SHAPES.read_bytes(), "image/png")})
    assert ok.status_code == 200
