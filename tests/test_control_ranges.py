"""Every numeric setting accepts every value its control allows: the core's types, and the Chat sliders' ends
through the /chat API."""

from __future__ import annotations

import pytest

from qvl_core.engine.messages import user_turn
from qvl_core.engine.sampling import MAX_REPETITION_PENALTY, MAX_TEMPERATURE, MAX_TOP_K, SamplingParams
from qvl_core.engine.types import GenerationRequest

ANSWER = "Fine."
NEUTRAL = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "presence_penalty": 0.0}
# The Chat tab's sliders, by label, and the /chat parameter each one is sent as.
CHAT_SLIDER_PARAMS = {
    "Max new tokens": "max_new_tokens",
    "Temperature": "temperature",
    "Top-p": "top_p",
    "Top-k": "top_k",
    "Repetition penalty": "repetition_penalty",
    "Presence penalty": "presence_penalty",
    "Max visual tokens per image": "max_image_tokens",
    "Video sampling fps": "fps",
    "Max video frames": "max_frames",
    "Thinking budget": "thinking_budget",
}


def test_whole_numbers_reach_the_model_as_the_types_it_needs(make_session):
    """Bug: temperature at its maximum, sent by the slider and the API as the integer 2, failed generation with
    "`temperature` (=2) has to be a strictly positive float"."""
    top = SamplingParams(max_new_tokens=8.0, temperature=int(MAX_TEMPERATURE), top_p=1, top_k=float(MAX_TOP_K),
                         repetition_penalty=int(MAX_REPETITION_PENALTY), seed=7.0)
    assert [type(v) for v in (top.temperature, top.top_p, top.repetition_penalty)] == [float] * 3
    assert [type(v) for v in (top.max_new_tokens, top.top_k, top.seed)] == [int] * 3
    session = make_session("qwen2_5_vl", ANSWER)
    text, stats = session.generate(GenerationRequest(turns=(user_turn("hi"),), sampling=top))
    assert text == ANSWER and stats.finish_reason == "stop"


@pytest.fixture(scope="module")
def chat_app(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl", ANSWER))


def _chat_sliders(demo) -> dict[str, tuple[float, float]]:
    """label -> (minimum, maximum) of every slider the Chat tab shows."""
    import gradio as gr

    chat = next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.id == "chat")
    found: dict[str, tuple[float, float]] = {}

    def walk(block) -> None:
        for child in getattr(block, "children", []):
            if isinstance(child, gr.Slider):
                found[child.label] = (child.minimum, child.maximum)
            walk(child)

    walk(chat)
    return found


def test_every_chat_slider_end_is_accepted_through_the_api(chat_app, media_dir):
    """Bug: a slider's end sent as the slider sends it (temperature 2, an integer) failed the request."""
    from gradio_client import Client, handle_file

    sliders = _chat_sliders(chat_app)
    assert "Temperature" in sliders and set(sliders) <= set(CHAT_SLIDER_PARAMS), sorted(sliders)
    client = Client(chat_app.local_url, verbose=False)
    # Parameters without a default (sampling left to the model) get the neutral value their slider starts at.
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/chat"]["parameters"]
    base = {p["parameter_name"]: NEUTRAL.get(p["parameter_name"]) for p in params
            if not p["parameter_has_default"] and p["parameter_name"] != "message"}
    files = [handle_file(str(media_dir / "red.jpg")), handle_file(str(media_dir / "count.avi"))]
    names = {p["parameter_name"] for p in params}
    for label, ends in sorted(sliders.items()):
        if CHAT_SLIDER_PARAMS[label] not in names:
            continue  # a setting /chat does not take
        for value in ends:
            # As the browser sends a whole value: a JSON integer.
            value = int(value) if float(value).is_integer() else value
            client.predict(api_name="/chat_reset")
            reply = client.predict(message={"text": "hi", "files": files}, api_name="/chat",
                                   **{**base, CHAT_SLIDER_PARAMS[label]: value})
            assert reply and ANSWER.startswith(reply), (label, value, reply)  # 1 new token: "F"


def _sliders(tab) -> dict[str, tuple[float, float]]:
    import gradio as gr

    with gr.Blocks() as blocks:
        tab.render()
    return {b.label: (b.minimum, b.maximum) for b in blocks.blocks.values() if isinstance(b, gr.Slider)}


def test_the_other_tabs_sliders_ends_pass_their_own_checks(make_session):
    """Every end of the Video QA budget, Documents DPI and Agent sliders is accepted by the check its handler
    runs (a slider that allows what its handler refuses is the temperature-2 bug in another tab)."""
    from qvl_core.media.documents import check_dpi
    from qvl_core.tasks.agent import MAX_ZOOMS_LIMIT
    from qvl_core.tasks.live_browser import MAX_LIVE_STEPS
    from ui.tabs.agent import AgentTab
    from ui.tabs.documents import DocumentsTab
    from ui.tabs.video import VideoTab

    session = make_session("qwen2_5_vl", ANSWER)
    video = _sliders(VideoTab(session))
    labels = ["Frames per second", "Max frames", "Max tokens per frame", "Total video token budget"]
    for end in (0, 1):
        VideoTab.budget(*(video[label][end] for label in labels))  # raises UserError for a refused value
    for dpi in _sliders(DocumentsTab(session))["PDF render DPI"]:
        check_dpi(dpi)
    agent = _sliders(AgentTab(session))
    assert agent["Zoom steps"] == (0, MAX_ZOOMS_LIMIT)
    assert "Step limit" not in agent  # the live browser is off here; with it on, its slider ends at the limit
    from qvl_core.tasks.live_browser import LiveBrowser

    live = _sliders(AgentTab(session, browser=LiveBrowser()))
    assert live["Step limit"] == (1, MAX_LIVE_STEPS)
