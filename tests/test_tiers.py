"""The test tiers: a test's tier follows the fixtures it uses, and the fast tier refuses processes and launches."""

from __future__ import annotations

import subprocess
import sys

import gradio as gr
import pytest

from tests.conftest import pytest_collection_modifyitems


class FakeItem:
    """Just what the collection hook reads and writes on a test item."""

    def __init__(self, name: str, fixturenames: list[str]) -> None:
        self.name, self.fixturenames, self.marks = name, fixturenames, set()

    def add_marker(self, mark: str) -> None:
        self.marks.add(mark)

    def get_closest_marker(self, mark: str) -> str | None:
        return mark if mark in self.marks else None


def test_fixtures_set_the_tier_and_browser_tests_run_last():
    """Regression: tiers were hand-placed `slow` marks, so a test that launched the app or ran the CLI without
    one ran in `make test-fast`. Now the fixtures that launch or spawn decide."""
    items = [FakeItem("browser", ["page", "chromium", "launch_app"]), FakeItem("pure", ["tmp_path"]),
             FakeItem("cli", ["qvl_cli", "run_python"]), FakeItem("tiny", ["make_session", "ckpt_dir"]),
             FakeItem("server", ["servers", "model_server"]), FakeItem("space", ["spawn_python"])]
    pytest_collection_modifyitems(None, items)
    assert {item.name: item.marks for item in items} == {
        "pure": set(), "tiny": set(), "cli": {"app"}, "server": {"app"}, "space": {"app"},
        "browser": {"app", "browser"}}
    assert items[-1].name == "browser"  # the shared Playwright session never runs next to the other tiers


def test_fast_tier_refuses_a_child_process():
    """Regression: nothing stopped a test from running the CLI in the fast tier; now it fails, naming the fix."""
    with pytest.raises(pytest.fail.Exception, match="started a process.*run_python"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_fast_tier_refuses_to_launch_the_app():
    """Regression: nothing stopped a test from launching a Gradio server in the fast tier; now it fails."""
    with pytest.raises(pytest.fail.Exception, match="launched a Gradio app"):
        gr.Blocks().launch(prevent_thread_lock=True)
