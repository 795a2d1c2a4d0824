"""Each app owns its output folder and sweeper: one app's lifetime never deletes another app's files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qvl_core.tasks.conversation import Conversation
from tests.conftest import ROOT, free_port
from ui.config import ServeConfig
from ui.shell import LAUNCH_KWARGS, build_demo
from ui.tabs.chat import ChatTab
from ui.tabs.grounding import GroundingTab

SHAPES = ROOT / "assets" / "shapes.png"
BOXES = '[{"bbox_2d": [10, 10, 100, 100], "label": "box"}]'


def handler(demo, tab_type: type, name: str):
    """The handler `name` of the app's own `tab_type` tab, as build_demo wired it."""
    return next(f.fn for f in demo.fns.values()
                if isinstance(getattr(f.fn, "__self__", None), tab_type) and f.fn.__name__ == name)


def grounding_json(demo) -> Path:
    """Run the app's Grounding tab on shapes.png; the path of the JSON download it wrote."""
    tab = handler(demo, GroundingTab, "run_page").__self__  # the app's own Grounding tab
    *_, last = tab.run(str(SHAPES), "Detect", "box", "", 1280, 256, 0.0, 1.0, 0, 1.05, -1, None)
    return Path(last[3])


def chat_figure(demo) -> Path:
    """Ask the app's Chat tab about shapes.png; the path of the boxes it drew."""
    conv, _, _ = handler(demo, ChatTab, "add_message")({"text": "Where?", "files": [str(SHAPES)]}, Conversation())
    *_, (conv, _) = handler(demo, ChatTab, "answer")(conv, "", 256, 0.0, 1.0, 0, 1.05, -1, None, 1280, 2.0, 64, False)
    return Path(conv.figures[-1])


@pytest.mark.timeout(120)
def test_an_app_with_a_short_lifetime_never_deletes_another_apps_files(make_session, request):
    """Regression: every app wrote into one process-wide folder, so the sweeper of an app with a 1 s lifetime
    deleted the files of an app in the same process whose lifetime was an hour."""
    session = make_session("qwen2_5_vl", BOXES)
    lasting = build_demo(session, ServeConfig(load=session.options, cache_ttl_s=3600))
    brief = build_demo(session, ServeConfig(load=session.options, cache_ttl_s=1))
    for demo in (lasting, brief):
        request.addfinalizer(demo.close)  # stops its sweeper
    kept = [grounding_json(lasting), chat_figure(lasting)]
    swept = grounding_json(brief)
    assert all(p.is_file() for p in [*kept, swept])
    while swept.exists():
        time.sleep(0.2)  # the brief app's sweeper removes its own file within about 2 s; the timeout guards a hang
    time.sleep(2.5)  # and sweeps at least twice more
    assert all(p.is_file() for p in kept), "the 1 s app deleted the 1 h app's files"
    assert all(p.is_relative_to(lasting.files.path) for p in kept) and swept.is_relative_to(brief.files.path)
    assert lasting.files.path != brief.files.path


def test_closing_the_app_stops_its_sweeper_and_a_relaunch_restarts_it(make_session, launch_app):
    session = make_session("qwen2_5_vl", BOXES)
    demo = launch_app(session, ServeConfig(load=session.options, cache_ttl_s=60))
    assert demo.files.sweeping
    demo.close()
    assert not demo.files.sweeping
    demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **LAUNCH_KWARGS)
    try:
        assert demo.files.sweeping
    finally:
        demo.close()
    assert not demo.files.sweeping
