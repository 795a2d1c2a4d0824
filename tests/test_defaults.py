"""Every surface shows the one source of each default: the CLI flags, the UI controls and the API endpoints."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr
import pytest

from qvl_core.cli import build_parser
from qvl_core.engine.sampling import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAMPLING
from qvl_core.media.documents import DEFAULT_DPI
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
from qvl_core.media.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES
from qvl_core.tasks.agent import DEFAULT_AGENT_MAX_NEW_TOKENS, DEFAULT_MAX_ZOOMS
from qvl_core.tasks.documents import (
    DEFAULT_DOC_IMAGE_TOKENS,
    DEFAULT_DOC_MAX_NEW_TOKENS,
    RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS,
)
from qvl_core.tasks.grounding import DEFAULT_GROUNDING_MAX_NEW_TOKENS
from qvl_core.tasks.video import DEFAULT_VIDEO_MAX_NEW_TOKENS
from ui.common import shown_sampling
from ui.shell import build_demo
from ui.tabs.agent import AgentTab
from ui.tabs.chat import ChatTab
from ui.tabs.documents import DocumentsTab
from ui.tabs.grounding import GroundingTab
from ui.tabs.video import VideoTab

SAMPLING = {"temperature": DEFAULT_SAMPLING.temperature, "top_p": DEFAULT_SAMPLING.top_p,
            "top_k": DEFAULT_SAMPLING.top_k, "repetition_penalty": DEFAULT_SAMPLING.repetition_penalty,
            "presence_penalty": DEFAULT_SAMPLING.presence_penalty}
SEED_IN_UI = -1 if DEFAULT_SAMPLING.seed is None else DEFAULT_SAMPLING.seed
# Per task: (max new tokens, max image tokens) from the task modules.
TASKS = {
    "chat": (DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_IMAGE_TOKENS),
    "ground": (DEFAULT_GROUNDING_MAX_NEW_TOKENS, DEFAULT_MAX_IMAGE_TOKENS),
    "parse": (DEFAULT_DOC_MAX_NEW_TOKENS, DEFAULT_DOC_IMAGE_TOKENS),
    "video": (DEFAULT_VIDEO_MAX_NEW_TOKENS, DEFAULT_MAX_IMAGE_TOKENS),
    "agent": (DEFAULT_AGENT_MAX_NEW_TOKENS, DEFAULT_MAX_IMAGE_TOKENS),
}
TABS = {"chat": ChatTab, "ground": GroundingTab, "parse": DocumentsTab, "video": VideoTab, "agent": AgentTab}
# Visible control label -> the sampling field it sets.
SLIDERS = {"Temperature": "temperature", "Top-p": "top_p", "Top-k": "top_k", "Repetition penalty": "repetition_penalty",
           "Presence penalty": "presence_penalty"}


@pytest.mark.parametrize("command", sorted(TASKS))
def test_cli_flags_default_to_the_source(command):
    """Regression: sampling defaults were written out again in qvl_core/cli.py, so a change in one place drifted."""
    argv = {"chat": ["chat", "-p", "x"], "ground": ["ground", "img.png"], "parse": ["parse", "d.pdf", "--out", "o"],
            "video": ["video", "v.mp4", "q"], "agent": ["agent", "s.png", "Press it"]}[command]
    ns = build_parser().parse_args(argv)
    max_new_tokens, image_tokens = TASKS[command]
    assert (ns.max_new_tokens, ns.max_image_tokens) == (max_new_tokens, image_tokens)
    assert {k: getattr(ns, k) for k in SAMPLING} == SAMPLING and ns.seed == DEFAULT_SAMPLING.seed
    assert (ns.fps, ns.max_frames) == (DEFAULT_FPS, DEFAULT_MAX_FRAMES)
    if command == "parse":
        assert ns.dpi == DEFAULT_DPI


def _controls(tab) -> dict[str, object]:
    """The visible controls of one tab, built on its own, by label."""
    with gr.Blocks() as blocks:
        tab.render()
    return {b.label: b.value for b in blocks.blocks.values()
            if isinstance(b, (gr.Slider, gr.Number)) and getattr(b, "label", None)}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_ui_controls_default_to_the_source(make_session, task):
    """Regression: the sliders in ui/common.py and the tabs carried their own copies of the sampling defaults."""
    session = make_session()
    controls = _controls(TABS[task](session))
    max_new_tokens, image_tokens = TASKS[task]
    if task == "parse":  # make_session() has random weights: a model that never stops gets a short page budget
        max_new_tokens = RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS
    assert controls["Max new tokens"] == max_new_tokens
    # The sampling sliders start at the model's own values (DEFAULT_SAMPLING leaves every one to the model).
    assert set(SAMPLING.values()) == {None}
    shown = shown_sampling(session.sampling_defaults())
    assert {field: controls[label] for label, field in SLIDERS.items()} == shown
    assert controls["Seed"] == SEED_IN_UI
    if task != "video":
        assert controls["Max visual tokens per image"] == image_tokens
    if task == "chat":
        assert (controls["Video sampling fps"], controls["Max video frames"]) == (DEFAULT_FPS, DEFAULT_MAX_FRAMES)
    if task == "video":
        assert (controls["Frames per second"], controls["Max frames"]) == (DEFAULT_FPS, DEFAULT_MAX_FRAMES)
    if task == "parse":
        assert controls["PDF render DPI"] == DEFAULT_DPI


def test_api_endpoint_defaults_match_the_source(make_session):
    """Regression: /ground and /parse_document hard-coded 0.0, 1.0, 0, 1.05 as their sampling, /chat its defaults."""
    demo = build_demo(make_session())
    demo.sweeper_stop.set()
    api = {name: {p["parameter_name"]: p.get("parameter_default") for p in ep["parameters"]}
           for name, ep in demo.get_api_info()["named_endpoints"].items()}
    chat = api["/chat"]
    assert {k: chat[k] for k in SAMPLING if k != "presence_penalty"} == {k: v for k, v in SAMPLING.items()
                                                                        if k != "presence_penalty"}
    assert chat["seed"] == SEED_IN_UI
    assert (chat["max_new_tokens"], chat["max_image_tokens"]) == TASKS["chat"]
    assert (chat["fps"], chat["max_frames"]) == (DEFAULT_FPS, DEFAULT_MAX_FRAMES)
    assert (api["/ground"]["max_new_tokens"], api["/ground"]["max_image_tokens"]) == TASKS["ground"]
    assert api["/parse_document"]["dpi"] == DEFAULT_DPI
    assert (api["/video_qa"]["fps"], api["/video_qa"]["max_frames"]) == (DEFAULT_FPS, DEFAULT_MAX_FRAMES)
    assert api["/agent_step"]["max_new_tokens"] == DEFAULT_AGENT_MAX_NEW_TOKENS
    assert (api["/agent_zoom"]["max_new_tokens"], api["/agent_zoom"]["max_zooms"]) == (DEFAULT_AGENT_MAX_NEW_TOKENS,
                                                                                        DEFAULT_MAX_ZOOMS)


def test_endpoints_without_sampling_parameters_use_the_source(make_session, monkeypatch):
    """Regression: /ground and /parse_document take no sampling parameters and sent hard-coded copies of the
    defaults; they send DEFAULT_SAMPLING with their task's max new tokens."""
    from ui.tabs import documents as doc_tab
    from ui.tabs import grounding as ground_tab

    seen = []
    monkeypatch.setattr(ground_tab, "ground", lambda *a, sampling, **k: seen.append(sampling) or iter(()))
    monkeypatch.setattr(doc_tab, "run_job", lambda session, files, options: seen.append(options.sampling) or iter(()))
    for call in (lambda: GroundingTab(make_session()).api_ground("x.png", "cat", "Detect", 1280, 2048),
                 lambda: DocumentsTab(make_session()).api_parse("x.pdf", "", "", DEFAULT_DPI, "")):
        with pytest.raises(gr.Error):  # the stand-ins stream nothing
            call()
    assert seen == [replace(DEFAULT_SAMPLING, max_new_tokens=2048),
                    replace(DEFAULT_SAMPLING, max_new_tokens=RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS)]
