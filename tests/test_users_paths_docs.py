"""Documents and the shell on the paths around the main flow (issue 15): Stop, refusals, fields, short files,
test checkpoints, the header; the browser side is in test_browser_users_paths.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationStats, SessionStatus
from qvl_core.errors import UserError
from qvl_core.media.documents import parse_page_range
from qvl_core.tasks.documents import (
    DEFAULT_DOC_MAX_NEW_TOKENS,
    MODES,
    RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS,
    JobOptions,
    JobProgress,
    PageResult,
    default_max_new_tokens,
    run_job,
)
from ui.shell import banner_markdown, display_name
from ui.tabs.documents import fields_note, stopped_status


def _status(random_weights: bool, scripted: bool, model_id: str = "Qwen/Qwen2.5-VL-7B-Instruct") -> SessionStatus:
    return SessionStatus(model_id, "qwen2_5_vl", "cpu", "float32", "sdpa", "none", None, random_weights, scripted)


def _page(**kw) -> PageResult:
    from PIL import Image

    stats = GenerationStats(prompt_tokens=1, completion_tokens=1, total_s=0.1, ttft_s=None, decode_tps=None,
                            peak_gpu_mb=None, finish_reason="stop",
                            image_input_sizes=((28, 28),), image_original_sizes=((28, 28),))
    return PageResult("twelve.pdf", 3, 12, Image.new("RGB", (28, 28)), kw.pop("raw", "x"), kw.pop("mode", MODES[0]),
                      stats, (28, 28), **kw)


def test_stop_says_stopped_and_keeps_what_was_finished():
    """Regression: after Stop the status said "Parsing twelve.pdf · page 3/12" for ever."""
    done = (_page(), _page())
    status = stopped_status(JobProgress(done, 12, current="twelve.pdf · page 3/12", partial="<h1>Hal"))
    assert status.startswith("**Stopped: 2 of 12 pages done.**") and "kept" in status
    assert "Parsing" not in status and status.count("page 3/12:") == 2  # the two finished pages' lines
    assert "Stopped" in stopped_status(None)


def test_an_answer_that_is_not_json_is_shown_in_the_fields_view():
    """Regression: Fields mode buried "The answer is not a JSON object." in the status, the Fields view empty."""
    page = _page(mode=MODES[3], fields={}, field_problems=("The answer is not a JSON object.",))
    note = fields_note(page)
    assert note.startswith("⚠️") and "**The answer is not a JSON object\\.**" in note
    assert fields_note(_page(mode=MODES[3], fields={"total": 3})) == ""


def test_a_short_file_in_a_shared_page_range_is_skipped_by_name():
    """Regression: one range over several files read as a mistake on the short ones ("write e.g. 1-5")."""
    with pytest.raises(UserError, match=r"skipped: it has 1 page, none of them in the page range '3-4'") as err:
        parse_page_range("3-4", 1, clamp=True)
    assert "write e.g." not in str(err.value)
    with pytest.raises(UserError, match="asks for page 4"):  # one file: the range is the person's mistake
        parse_page_range("3-4", 1)


def test_a_model_that_never_stops_gets_a_short_page_budget():
    """Regression: 8192 new tokens per page on random weights held the shared queue for minutes, at "0/1"."""
    assert default_max_new_tokens(_status(True, False)) == RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS < 1024
    assert default_max_new_tokens(_status(True, True)) == DEFAULT_DOC_MAX_NEW_TOKENS  # a script ends by itself
    assert default_max_new_tokens(_status(False, False)) == DEFAULT_DOC_MAX_NEW_TOKENS


def test_job_progress_counts_the_tokens_of_the_page_in_progress(make_session, tmp_path):
    """Regression: a long page showed "0/1" until it finished; the tokens so far now come with each update."""
    from PIL import Image

    Image.new("RGB", (200, 200), "white").save(tmp_path / "page.png")
    options = JobOptions(sampling=SamplingParams(max_new_tokens=6))
    counts = [p.tokens for p in run_job(make_session(), [tmp_path / "page.png"], options) if p.current and p.partial]
    assert counts and counts == sorted(counts) and 0 < counts[-1] <= 6


def test_the_banner_of_a_scripted_model_does_not_call_its_answers_noise():
    """Regression: a scripted checkpoint's banner said its answers were noise."""
    scripted, noise = banner_markdown(_status(True, True)), banner_markdown(_status(True, False))
    assert "noise" not in scripted and "Scripted test model" in scripted
    assert "noise" in noise and banner_markdown(_status(False, False)) is None


def test_the_header_names_the_model_not_the_server_path(tmp_path):
    """Regression: the header showed the checkpoint's full path on the server to every visitor."""
    ckpt = tmp_path / "secret" / "qwen-demo"
    ckpt.mkdir(parents=True)
    assert display_name(str(ckpt)) == "qwen-demo"
    assert display_name("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert display_name(str(Path("~") / "models" / "mine")) == "mine"


@pytest.mark.parametrize("tab", ["chat", "grounding", "documents", "video"])
def test_every_tab_offers_its_examples(make_session, tab):
    """Regression: after the tabs moved into ui/tabs/, Grounding and Documents looked for their example files in
    ui/assets, filtered every example out, and showed an empty "Examples" box (Video QA's, a blank player)."""
    import importlib

    import gradio as gr

    module = importlib.import_module(f"ui.tabs.{tab}")
    cls = next(getattr(module, n) for n in dir(module) if n.endswith("Tab") and n.lower() == f"{tab}tab")
    with gr.Blocks() as blocks:
        cls(make_session()).render()
    datasets = [b for b in blocks.blocks.values() if isinstance(b, gr.Dataset)]
    assert datasets and all(len(d.samples) >= 1 for d in datasets)
    assert (module.ASSETS / "shapes.png").is_file()
