"""The bad-input catalogue: every broken, fake, hostile or oversized input through the UI handlers, the API
endpoints and the CLI gives one clear message naming the problem (never a traceback), and the next request works.

Cases already covered elsewhere (a fake image through /chat, a bomb through the session and the Grounding tab,
broken PDFs through the document loader) are not repeated; this table fills in the other paths.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qvl_core.engine.local import ModelSession
from qvl_core.errors import UserError
from qvl_core.settings import Limits
from qvl_core.tasks.conversation import Conversation
from qvl_core.tasks.documents import MODES
from tests.conftest import ROOT
from tests.test_docparse_task import make_pdf
from ui.config import add_serve_args, serve_config
from ui.tabs.chat import ChatTab
from ui.tabs.documents import DocumentsTab
from ui.tabs.grounding import GroundingTab
from ui.tabs.video import VideoTab

ANSWER = '[{"bbox_2d": [10, 10, 60, 60], "label": "thing"}] Ünïcødé ✓ 数字 done.'
CLOCK = ROOT / "assets" / "clock.mp4"
SHAPES = ROOT / "assets" / "shapes.png"
SAMPLING = (256, 0.0, 1.0, 0, 1.05, -1, None)  # ..., seed, presence penalty (the model's)
SMALL = (100, 0.0, 1.0, 0, 1.05, -1, None)
NO_PROGRESS = {"progress": lambda *a, **k: None}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """One file per kind of bad input (and a few good but awkward ones)."""
    d = tmp_path_factory.mktemp("bad")
    png = SHAPES.read_bytes()
    mp4 = CLOCK.read_bytes()
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(png[: len(png) // 3])
    (d / "fake.png").write_text("this is not a picture")
    (d / "video-named.png").write_bytes(mp4)  # wrong extension: a video called .png
    Image.new("1", (12000, 12000)).save(d / "bomb.png")  # 144 MP from a tiny file
    Image.new("RGB", (6000, 20), "red").save(d / "sliver.png")  # 300:1
    Image.new("RGB", (6000, 4000), (90, 140, 200)).save(d / "huge.png")  # 24 MP: valid, downscaled to the budget
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(mp4[:2048])
    (d / "fake.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    shutil.copy(SHAPES, d / "image-named.mp4")
    (d / "empty.pdf").write_bytes(b"")
    pdf = make_pdf(d / "good.pdf", 2).read_bytes()
    (d / "truncated.pdf").write_bytes(pdf[: len(pdf) // 3])
    (d / "fake.pdf").write_text("%PDF-1.4 this is not really a PDF")
    shutil.copy(SHAPES, d / "image-named.pdf")
    return d


# ---- the catalogue: file -> the message every path must show (a regex) --------------------------------
IMAGES = {
    "empty.png": r"'empty.png' is empty",
    "truncated.png": r"'truncated.png' is damaged or truncated",
    "fake.png": r"'fake.png' is not an image",
    "video-named.png": r"'video-named.png' is not an image",
    "bomb.png": r"'bomb.png' is 12000x12000 = 144.0 MP, over the limit of 64 MP \(QVL_MAX_IMAGE_PIXELS\)",
    "sliver.png": r"aspect ratio 300:1 \(6000x20\) is beyond the limit of 200:1",
}
VIDEOS = {
    "empty.mp4": r"'empty.mp4' is empty",
    "truncated.mp4": r"'truncated.mp4' (is not a video|is truncated or damaged|is damaged|has no readable frames)",
    "fake.mp4": r"'fake.mp4' (is not a video|is truncated or damaged|is damaged|has no readable frames)",
}
DOCUMENTS = {
    "empty.pdf": r"'empty.pdf' is empty",
    "truncated.pdf": r"'truncated.pdf' is damaged or not a valid PDF",
    "fake.pdf": r"'fake.pdf' is damaged or not a valid PDF",
    "image-named.pdf": r"'image-named.pdf' is (damaged or )?not a (valid )?PDF",
}
# Sampling values as a person could type them into the API or CLI.
SAMPLING_CASES = [
    ({"temperature": float("nan")}, r"temperature must be a number, got nan"),
    ({"temperature": -1.0}, r"temperature must be between 0.0 and 2.0, got -1.0"),
    ({"top_p": 0.0}, r"top_p must be above 0"),
    ({"top_k": 5000}, r"top_k must be between 0 and 1000, got 5000"),
    ({"max_new_tokens": 10**9}, r"max_new_tokens must be between 1 and 32768, got 1000000000"),
    ({"repetition_penalty": 0.5}, r"repetition_penalty must be between 1.0 and 2.0, got 0.5"),
]
LONG_PROMPT = "é" * 100_001
UNICODE_PROMPT = "Qu'est-ce que c'est ? 这是什么？ مرحبا 👩‍👩‍👧 Z̸̢a̶l̵g̷o \u202eevil\u202c \x00 end"


def drain(gen):
    *_, last = gen
    return last


@pytest.fixture(scope="module")
def session(make_session):
    return make_session("qwen2_5_vl", ANSWER)


# ---- tier 2: the tab handlers on plain data -----------------------------------------------------------
def _chat(session, text: str, files: list[str], sampling=SAMPLING):
    tab = ChatTab(session)
    conv, _, _ = tab.add_message({"text": text, "files": files}, Conversation())
    return drain(tab.answer(conv, "", *sampling, 1280, 2.0, 64, False))


def _chat_works(session) -> None:
    conv, _ = _chat(session, "and now?", [str(SHAPES)])
    assert conv.turns[-1].text == ANSWER


@pytest.mark.parametrize("name", [*IMAGES, *VIDEOS])
def test_chat_tab_bad_media(session, bad, name):
    with pytest.raises(gr.Error, match=(IMAGES | VIDEOS)[name]):
        _chat(session, "what is this?", [str(bad / name)])
    _chat_works(session)


@pytest.mark.parametrize("name", list(IMAGES))
def test_grounding_tab_bad_image(session, bad, name):
    tab = GroundingTab(session)
    with pytest.raises(gr.Error, match=IMAGES[name]):
        drain(tab.run(str(bad / name), "Detect", "thing", "", 1280, *SAMPLING))
    assert drain(tab.run(str(SHAPES), "Detect", "thing", "", 1280, *SAMPLING))[1][0][0] == "thing"


@pytest.mark.parametrize("name", list(VIDEOS))
def test_video_tab_bad_video(session, bad, name):
    tab = VideoTab(session)
    with pytest.raises(gr.Error, match=VIDEOS[name]):
        drain(tab.run(str(bad / name), "Describe", "", "", 2.0, 8, 64, 4096, None, None, *SAMPLING))
    assert drain(tab.run(str(CLOCK), "Describe", "", "", 2.0, 8, 64, 4096, None, None, *SAMPLING))[6] == ANSWER


@pytest.mark.parametrize("name", [*DOCUMENTS, "empty.png", "truncated.png", "fake.png", "bomb.png"])
def test_documents_tab_bad_file(session, bad, name):
    tab = DocumentsTab(session)
    with pytest.raises(gr.Error, match="Nothing could be parsed: .*" + (DOCUMENTS | IMAGES)[name].replace("64 MP", "")
                       .split(", over")[0]):
        drain(tab.run([str(bad / name)], MODES[0], "", "", 150, 256, *SAMPLING, **NO_PROGRESS))
    state = drain(tab.run([str(bad / "good.pdf")], MODES[0], "", "1", 150, 256, *SAMPLING, **NO_PROGRESS))[0]
    assert len(state.done) == 1


def test_still_image_named_mp4_is_read_as_a_one_frame_video(session, bad):
    """The decoders go by content, not by extension: a PNG called .mp4 is a valid one-frame video."""
    conv, _ = _chat(session, "what is this?", [str(bad / "image-named.mp4")])
    assert conv.turns[-1].text == ANSWER


def test_huge_valid_image_is_downscaled_within_the_budget(session, bad):
    """24 MP is inside every limit: it is resized to the token budget, not refused."""
    conv, _ = _chat(session, "describe", [str(bad / "huge.png")])
    assert conv.turns[-1].text == ANSWER
    result = drain(GroundingTab(session).run(str(bad / "huge.png"), "Detect", "thing", "", 256, *SAMPLING))
    assert "Image 6000×4000 px, seen by the model as" in result[2]


@pytest.mark.parametrize(("prompt", "message"), [(LONG_PROMPT, r"Message is 100001 characters, over the limit of "
                                                                r"100000"), ("   \n\t ", "Type a message")])
def test_chat_tab_bad_prompts(session, prompt, message):
    with pytest.raises(gr.Error, match=message):
        _chat(session, prompt, [])
    _chat_works(session)


def test_unicode_prompt_travels_intact(session):
    conv, shown = _chat(session, UNICODE_PROMPT, [])
    assert conv.turns[0].text == UNICODE_PROMPT and conv.turns[-1].text == ANSWER
    assert "数字" in shown[-1]["content"]


@pytest.mark.parametrize(("values", "message"), SAMPLING_CASES)
def test_chat_tab_invalid_sampling(session, values, message):
    names = ["max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "presence_penalty"]
    sampling = [values.get(n, v) for n, v in zip(names, SAMPLING, strict=True)]
    with pytest.raises(gr.Error, match=message):
        _chat(session, "hi", [], sampling)
    _chat_works(session)


# ---- limits set by flags (one Limits, held by the backend, read by every check) -----------------------
def _flags(*argv: str):
    p = argparse.ArgumentParser()
    add_serve_args(p)
    return serve_config(p.parse_args(list(argv)))


def test_limit_flags_and_environment(monkeypatch):
    cfg = _flags("--max-image-pixels", "1000000", "--max-pdf-pages", "1", "--max-video-seconds", "2",
                 "--max-new-tokens-limit", "100", "--cache-ttl", "60", "--allow-url-media", "a.example, B.example")
    assert cfg.limits == Limits(max_image_pixels=1_000_000, max_pdf_pages=1, max_video_seconds=2.0,
                                max_new_tokens=100)
    assert cfg.cache_ttl_s == 60 and cfg.allow_url_media == ("a.example", "b.example")
    with pytest.raises(UserError, match="--max-pdf-pages must be positive, got 0"):
        _flags("--max-pdf-pages", "0")
    with pytest.raises(UserError, match=r"--max-new-tokens-limit must be positive, got -5 \(env QVL_MAX_NEW_TOKENS\)"):
        _flags("--max-new-tokens-limit", "-5")
    assert cfg.backend.limits is cfg.limits  # the one object the backend checks with
    with pytest.raises(UserError, match="--cache-ttl must be at least 1 second"):
        _flags("--cache-ttl", "0")
    monkeypatch.setenv("QVL_CACHE_TTL", "120")
    monkeypatch.setenv("QVL_ALLOW_URL_MEDIA", "media.example")
    cfg = _flags()
    assert cfg.cache_ttl_s == 120 and cfg.allow_url_media == ("media.example",)


def test_limits_from_flags_reach_every_tab(session, bad, tmp_path):
    """Refusals name the limit and the value that broke it, for limits set at startup (on the backend)."""
    small = tmp_path / "small.png"
    Image.new("RGB", (1200, 1000), "white").save(small)
    limits = Limits(max_image_pixels=1_000_000, max_pdf_pages=1, max_video_seconds=2.0, max_new_tokens=200)
    limited = ModelSession(session.options, loaded=session.loaded, limits=limits)
    with pytest.raises(gr.Error, match=r"1200x1000 = 1.2 MP, over the limit of 1 MP \(QVL_MAX_IMAGE_PIXELS\)"):
        _chat(limited, "look", [str(small)], SMALL)
    with pytest.raises(gr.Error, match=r"1200x1000 = 1.2 MP, over the limit of 1 MP"):
        drain(GroundingTab(limited).run(str(small), "Detect", "thing", "", 1280, *SMALL))
    with pytest.raises(gr.Error, match=r"2 pages, over the limit of 1 pages? per job"):
        drain(DocumentsTab(limited).run([str(bad / "good.pdf")], MODES[0], "", "", 150, 256, *SMALL,
                                        **NO_PROGRESS))
    with pytest.raises(gr.Error, match=r"'clock.mp4' lasts 8 s, over the limit of 2 s \(QVL_MAX_VIDEO_SECONDS\)"):
        drain(VideoTab(limited).run(str(CLOCK), "Describe", "", "", 2.0, 8, 64, 4096, None, None, *SMALL))
    with pytest.raises(gr.Error, match=r"max_new_tokens must be between 1 and 200, got 256 .*QVL_MAX_NEW_TOKENS"):
        _chat(limited, "hi", [])
    _chat_works(session)  # the shared session kept its own limits: nothing global was changed


# ---- tier 3: the API endpoints of the launched app ----------------------------------------------------
@pytest.fixture(scope="module")
def client(session, launch_app):
    return Client(launch_app(session).local_url, verbose=False)


def _no_traceback(exc: BaseException) -> None:
    assert "Traceback" not in str(exc) and 'File "' not in str(exc)


API_CASES = [
    *[("/chat", name, message) for name, message in (IMAGES | VIDEOS).items()],
    *[("/ground", name, message) for name, message in IMAGES.items()],
    *[("/video_qa", name, message) for name, message in VIDEOS.items()],
    *[("/parse_document", name, message) for name, message in DOCUMENTS.items()],
]


def _call(client, endpoint: str, path: Path | str, **extra):
    f = handle_file(str(path))
    if endpoint == "/chat":
        return client.predict(message={"text": extra.pop("text", "what is this?"), "files": [f]}, **extra,
                              api_name="/chat")
    if endpoint == "/ground":
        return client.predict(image=f, text="thing", preset="Detect", api_name="/ground")
    if endpoint == "/video_qa":
        return client.predict(video=f, question="what happens?", fps=2.0, max_frames=8, api_name="/video_qa")
    return client.predict(file=f, pages="1", api_name="/parse_document")


GOOD = {"/chat": SHAPES, "/ground": SHAPES, "/video_qa": CLOCK, "/parse_document": None}


@pytest.mark.parametrize(("endpoint", "name", "message"), API_CASES)
def test_api_bad_input(client, bad, endpoint, name, message):
    with pytest.raises(Exception, match=message) as info:
        _call(client, endpoint, bad / name)
    _no_traceback(info.value)
    assert _call(client, endpoint, GOOD[endpoint] or bad / "good.pdf")  # the next request works


# NaN cannot travel as JSON: gradio_client refuses to send it (the handler and CLI cases cover it).
@pytest.mark.parametrize(("values", "message"), SAMPLING_CASES[1:])
def test_api_invalid_sampling(client, values, message):
    with pytest.raises(Exception, match=message) as info:
        client.predict(message={"text": "hi", "files": []}, **values, api_name="/chat")
    _no_traceback(info.value)


def test_api_prompts(client):
    with pytest.raises(Exception, match=r"over the limit of 100000") as info:
        client.predict(message={"text": LONG_PROMPT, "files": []}, api_name="/chat")
    _no_traceback(info.value)
    assert client.predict(message={"text": UNICODE_PROMPT, "files": []}, api_name="/chat") == ANSWER


# ---- the CLI: exit status non-zero, one line on stderr -------------------------------------------------
CLI_CASES = [
    (["chat", "{bad}/bomb.png", "-p", "hi"], IMAGES["bomb.png"]),
    (["chat", "{bad}/truncated.mp4", "-p", "hi"], VIDEOS["truncated.mp4"]),
    (["chat", "{bad}/sliver.png", "-p", "hi"], IMAGES["sliver.png"]),
    (["chat", "-p", "hi", "--top-p", "nan"], r"top_p must be a number, got nan"),
    # ASCII, so one argument stays under the kernel's 128 KiB limit; it used to run for minutes unchecked.
    (["chat", "-p", "x" * 100_001], r"Message is 100001 characters, over the limit of 100000"),
    (["ground", "{bad}/video-named.png", "thing"], IMAGES["video-named.png"]),
    (["video", "{bad}/empty.mp4", "what?"], VIDEOS["empty.mp4"]),
]


@pytest.mark.parametrize(("args", "message"), CLI_CASES)
def test_cli_bad_input_is_one_line_and_non_zero(qvl_cli, ckpt_dir, bad, args, message):
    args = [a.replace("{bad}", str(bad)) for a in args]
    res = qvl_cli(*args, "--model", str(ckpt_dir("qwen2_5_vl", ANSWER)), "--device", "cpu", "-q")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("qvl: error:")]
    assert len(errors) == 1, res.stderr
    import re

    assert re.search(message, errors[0]), errors[0]


def test_cli_parse_bad_documents_and_unicode_prompt(qvl_cli, ckpt_dir, bad, tmp_path):
    model = ["--model", str(ckpt_dir("qwen2_5_vl", ANSWER)), "--device", "cpu", "-q"]
    res = qvl_cli("parse", str(bad / "truncated.pdf"), str(bad / "empty.pdf"), "--out", str(tmp_path), *model)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("qvl: error:")]
    assert len(errors) == 2 and "truncated.pdf" in errors[0] + errors[1] and "empty.pdf" in errors[0] + errors[1]
    ok = qvl_cli("chat", "-p", UNICODE_PROMPT.replace("\x00", ""), *model)
    assert ok.returncode == 0 and ok.stdout == ANSWER + "\n"


# ---- model text on its way to the chat (pure; the browser test proves it renders inertly) -------------
@pytest.mark.parametrize(("text", "shown"), [
    ("a <script>x()</script> b", "a &lt;script>x()&lt;/script> b"),
    ('<img src=x onerror="y()">', '&lt;img src=x onerror="y()">'),
    ("![p](http://evil.example/p.png)", "!\\[p](http://evil.example/p.png)"),
    ("[c](javascript:y())", "[c](#))"),
    ("[c](JaVaScRiPt:y)", "[c](#)"),
    ("[c](jav&#97;script:y)", "[c](#)"),
    ("[c](data:text/html,x)", "[c](#)"),
    ("[r]: javascript:y", "[r]: #"),
    ("[ok](https://example.org/a) and [m](mailto:a@b.c)", "[ok](https://example.org/a) and [m](mailto:a@b.c)"),
    # Code shows as written; its tag-like `<` carry an invisible zero-width space (safe_markdown's docstring).
    ("`<b>` and\n```html\n<img src=x>\n```\n<i>", "`<\u200bb>` and\n```html\n<\u200bimg src=x>\n```\n&lt;i>"),
    ("3 < 4 and **bold** and $x^2$", "3 < 4 and **bold** and $x^2$"),
])
def test_safe_markdown(text, shown):
    from qvl_core.parse.safe_markdown import safe_markdown

    assert safe_markdown(text) == shown


# ---- issue 16 item 2: every text input has a named limit, checked before any work ------------------------
def test_text_limits_name_the_field_through_the_handlers(session):
    """A 1,000,000-character system prompt ran for minutes; grounding text, video questions, field lists, field
    names and page ranges were unbounded (a 100,000-character field name reached the model)."""
    from qvl_core.settings import MAX_FIELD_NAME_CHARS, MAX_PROMPT_CHARS, MAX_SYSTEM_CHARS

    tab = ChatTab(session)
    conv, _, _ = tab.add_message({"text": "hi", "files": []}, Conversation())
    with pytest.raises(gr.Error, match=f"System prompt is {MAX_SYSTEM_CHARS + 1} characters, over the limit of "
                                       f"{MAX_SYSTEM_CHARS}"):
        drain(tab.answer(conv, "s" * (MAX_SYSTEM_CHARS + 1), *SAMPLING, 1280, 2.0, 64, False))
    long = "x" * (MAX_PROMPT_CHARS + 1)
    with pytest.raises(gr.Error, match=f"What to find is {len(long)} characters, over the limit of"):
        drain(GroundingTab(session).run(str(SHAPES), "Locate", long, "", 1280, *SAMPLING))
    with pytest.raises(gr.Error, match=f"The grounding prompt is {len(long)} characters"):
        drain(GroundingTab(session).run(str(SHAPES), "Custom", "", long, 1280, *SAMPLING))
    with pytest.raises(gr.Error, match=f"The question is {len(long)} characters"):
        drain(VideoTab(session).run(str(CLOCK), "Custom", long, "", 2.0, 8, 64, 4096, None, None, *SAMPLING))
    name = "a" * 100_000
    with pytest.raises(gr.Error, match=r"The fields to extract \(list or JSON schema\) is 100000 characters"):
        drain(DocumentsTab(session).run([str(SHAPES)], MODES[3], name, "", 150, 256, *SAMPLING, **NO_PROGRESS))
    with pytest.raises(gr.Error, match=f"Field name 'a{{40}}'… is 300 characters, over the limit of "
                                       f"{MAX_FIELD_NAME_CHARS}"):
        drain(DocumentsTab(session).run([str(SHAPES)], MODES[3], "date, " + "a" * 300, "", 150, 256, *SAMPLING,
                                        **NO_PROGRESS))
    with pytest.raises(gr.Error, match="The page range is 5000 characters, over the limit of 1000"):
        drain(DocumentsTab(session).run([str(SHAPES)], MODES[0], "", "1," * 2500, 150, 256, *SAMPLING,
                                        **NO_PROGRESS))
    _chat_works(session)


def test_system_prompt_limit_holds_for_every_backend():
    """The check is on the request itself, so the OpenAI backend (which cannot count tokens) refuses it too."""
    from qvl_core.engine.messages import Turn
    from qvl_core.engine.types import GenerationRequest

    with pytest.raises(UserError, match="System prompt is 1000000 characters, over the limit of 20000"):
        GenerationRequest(turns=(Turn("user", "hi"),), system="x" * 1_000_000)
    with pytest.raises(UserError, match=r"Message 1 holds an invalid character \(a lone surrogate U\+D800"):
        GenerationRequest(turns=(Turn("user", "a\ud800"),))


def test_cli_system_prompt_over_the_limit(qvl_cli, ckpt_dir):
    res = qvl_cli("chat", "-p", "hi", "--system", "s" * 20_001, "--model", str(ckpt_dir("qwen2_5_vl", ANSWER)),
                  "--device", "cpu", "-q")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "System prompt is 20001 characters, over the limit of 20000" in res.stderr


# ---- issue 16 item 3: what the model writes is text in the Documents status --------------------------------
@pytest.mark.parametrize("key", ['<img src="http://evil.example/p.png">', "![k](http://evil.example/p.png)",
                                 '<div style="position:fixed;inset:0">', "$\\frac{1}{2}$", "[x](javascript:y)"])
def test_documents_status_shows_model_field_names_as_text(session, key):
    """A field named <img src=…> or ![k](http://…) in the model's JSON was rendered by the status Markdown."""
    import json

    import markdown_it

    from qvl_core.engine.types import GenerationStats
    from qvl_core.tasks.documents import JobProgress, PageResult, parse_fields, validate_fields
    from ui.tabs.documents import status_markdown

    values, problems = validate_fields('{"date": null, ' + json.dumps(key) + ": 1}", parse_fields("date"))
    assert f"Unexpected field: {key}" in problems
    stats = GenerationStats(1, 1, None, None, 0.1, None, "stop")
    result = PageResult("a.png", 1, 1, Image.new("RGB", (4, 4)), "{}", MODES[3], stats, (28, 28), fields=values,
                        field_problems=tuple(problems))
    html = markdown_it.MarkdownIt("commonmark").render(status_markdown(JobProgress((result,), 1, finished=True)))
    assert "<img" not in html and "<div" not in html and "<a " not in html
    assert html_unescape(html).count(key) == 1  # shown, literally


def html_unescape(text: str) -> str:
    import html as html_lib
    import re

    return html_lib.unescape(re.sub(r"<[^>]+>", "", text))


# ---- issue 16 item 9: errors name what was wrong and what is allowed (raw HTTP, as an attacker sends) ------
def _raw(client, api: str, data: list) -> str:
    """POST a JSON body Python's json writes (NaN included) and return the event's error message."""
    import json

    import httpx

    base = client.src.rstrip("/")
    r = httpx.post(f"{base}/gradio_api/call/{api}", content=json.dumps({"data": data}),
                   headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    stream = httpx.get(f"{base}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=300).text
    assert "event: error" in stream, stream[-500:]
    return json.loads(stream.rsplit("data:", 1)[1])["error"] or "(no message)"


def _upload(client, path: Path) -> dict:
    import httpx

    with open(path, "rb") as f:
        r = httpx.post(client.src.rstrip("/") + "/gradio_api/upload", files={"files": f}, timeout=60)
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


CHAT_DEFAULTS = {"message": {"text": "hi", "files": []}, "system": "", "max_new_tokens": 20, "temperature": 0.0,
                 "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.05, "seed": -1, "max_image_tokens": 256,
                 "fps": 2.0, "max_frames": 8, "thinking": None, "thinking_budget": 4096}


def _chat_data(**values) -> list:
    return [*(CHAT_DEFAULTS | values).values(), None]


@pytest.mark.parametrize(("values", "message"), [
    ({"max_new_tokens": float("nan")}, r"max_new_tokens must be a whole number, got nan"),
    ({"top_k": float("inf")}, r"top_k must be a whole number, got inf"),
    ({"seed": "abc"}, r"seed must be a whole number, got 'abc'"),
    ({"max_new_tokens": [1, 2]}, r"max_new_tokens must be a whole number, got \[1, 2\]"),
    ({"max_frames": float("nan")}, r"max_frames must be a whole number, got nan"),
    ({"temperature": 1e-39, "seed": 1}, r"temperature must be 0 \(greedy\) or between 1e-06 and 2.0, got 1e-39"),
    ({"message": {"text": "hi \ud800", "files": []}}, r"Message holds an invalid character \(a lone surrogate "
                                                        r"U\+D800 at character 4\)"),
    ({"system": "s \udfff"}, r"System prompt holds an invalid character \(a lone surrogate U\+DFFF"),
    ({"system": "x" * 1_000_000}, r"System prompt is 1000000 characters, over the limit of 20000"),
])
def test_api_chat_values_are_named(client, values, message):
    """NaN/inf/text/lists in whole-number fields gave {"error": null}; a tiny temperature "probability tensor
    contains inf/nan"; a lone surrogate "(TypeError)"; a huge system prompt ran the prefill for minutes."""
    import re

    error = _raw(client, "chat", _chat_data(**values))
    assert re.search(message, error), error


def test_api_errors_name_the_problem(client, bad):
    """A PNG named .mp4 to /ground gave (IndexError), a truncated PNG to /video_qa a PermissionError, a bomb page
    named the upload limit's variable, dpi "abc" gave (ValueError) and dpi 0 was silently replaced."""
    import re

    # An image by its content, whatever its name: grounded like any image.
    _, detections = client.predict(image=handle_file(str(bad / "image-named.mp4")), text="thing", preset="Detect",
                                   api_name="/ground")
    assert detections[0]["label"] == "thing"
    video = _raw(client, "video_qa", [_upload(client, bad / "truncated.png"), "what?", 2.0, 8, False])
    assert re.search(r"'truncated.png' (is not a video|is damaged|has no readable frames)", video), video
    assert "PermissionError" not in video
    page = _raw(client, "parse_document", [_upload(client, bad / "bomb.png"), MODES[0], "1", 150, "", False])
    assert "QVL_MAX_PAGE_SOURCE_PIXELS" in page and "QVL_MAX_IMAGE_PIXELS" not in page, page
    for dpi, message in [("abc", "dpi must be a number in the supported range 50-300 dpi, got 'abc'"),
                         (0, "Resolution 0 dpi is outside the supported range 50-300 dpi"),
                         (float("nan"), "dpi must be a number in the supported range 50-300 dpi, got nan")]:
        assert message in _raw(client, "parse_document", [_upload(client, SHAPES), MODES[0], "1", dpi, "", False])
    assert "max_image_tokens must be a whole number, got nan" in _raw(
        client, "ground", [_upload(client, SHAPES), "thing", "Detect", float("nan"), 64, False])
    assert "fps must be a number, got 'abc'" in _raw(client, "video_qa", [_upload(client, CLOCK), "q", "abc", 8, False])
