"""The OpenAI-compatible backend: payloads and error mapping (pure), then a real `transformers serve` behind the
launched app (chat, grounding exact in original pixels, documents, video, Stop) and the CLI, and the errors a
broken, slow or absent server gives."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qvl_core.engine.backend import Backend, BackendOptions, open_backend
from qvl_core.engine.loading import LoadOptions
from qvl_core.engine.messages import Media, Turn, user_turn
from qvl_core.engine.openai import (
    OpenAIBackend,
    build_payload,
    http_error,
    map_finish_reason,
    resolve_family,
    sampling_fields,
)
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.sse import parse_sse_line
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import GenerationError, ModelLoadError, UserError
from qvl_core.families import FAMILIES
from qvl_core.flags import backend_options
from qvl_core.media.images import PixelBudget, prepare_image
from qvl_core.media.video import SampledVideo
from qvl_core.tasks.grounding import planned_input_size
from tests.conftest import child_env
from tests.serving import TRACE, free_port
from tests.test_docparse_task import REPORT_HTML, make_pdf
from tests.test_grounding_app import EXPECTED_BOX, EXPECTED_POINT, ORIGINAL, scripted_answer
from tests.test_video_app import ANSWER as VIDEO_ANSWER
from tests.test_video_app import CLOCK
from ui.config import add_serve_args, serve_config

KEY = "sk-test-secret-never-shown"
Q25 = FAMILIES["qwen2_5_vl"]


# ---- pure: family, payload, sampling, events, errors --------------------------------------------------
def test_family_from_flag_folder_or_name(ckpt_dir):
    assert resolve_family("anything", "qwen2.5-vl") is FAMILIES["qwen2_5_vl"]
    assert resolve_family("anything", "qwen3_vl") is FAMILIES["qwen3_vl"]
    assert resolve_family(str(ckpt_dir("qwen3_vl"))) is FAMILIES["qwen3_vl"]  # the folder's config.json
    assert resolve_family("Qwen/Qwen2.5-VL-7B-Instruct-AWQ") is FAMILIES["qwen2_5_vl"]
    assert resolve_family("Qwen/Qwen2-VL-7B-Instruct") is FAMILIES["qwen2_vl"]
    assert resolve_family("Qwen/Qwen3-VL-8B-Instruct") is FAMILIES["qwen3_vl"]
    assert resolve_family("Qwen/Qwen3-VL-30B-A3B-Instruct") is FAMILIES["qwen3_vl_moe"]
    with pytest.raises(UserError, match="pass --family"):
        resolve_family("my-finetune")
    with pytest.raises(UserError, match="not a Qwen-VL family"):
        resolve_family("x", "llava")


def _frames(n: int = 4, h: int = 56, w: int = 84) -> SampledVideo:
    frames = np.stack([np.full((h, w, 3), 20 * i, np.uint8) for i in range(n)])
    return SampledVideo(frames=frames, timestamps=[1.0 + 0.5 * i for i in range(n)], fps=2.0, source_fps=10.0,
                        total_frames=100, indices=[10 + 5 * i for i in range(n)], original_size=(w, h), start=1.0)


def _decode_png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_payload_keeps_the_plan_and_sends_our_exact_sizes():
    """Images go as PNG data URLs at exactly the size our resize chose; history, system and labels as in process."""
    img = prepare_image(Image.new("RGB", (1000, 500), "red"), Q25, PixelBudget.from_tokens(Q25))
    request = GenerationRequest(
        turns=(Turn("user", "first", (Media("image", "a.png"),)), Turn("assistant", "an answer"),
               Turn("user", "and now?")),
        system="Be brief.", label_media=True, sampling=SamplingParams(max_new_tokens=77))
    body = build_payload("served-name", Q25, request, (img,), (), "vllm")
    assert body["model"] == "served-name" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 77
    system, user, assistant, follow_up = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert [p["type"] for p in user["content"]] == ["text", "image_url", "text"]
    assert user["content"][0]["text"] == "Picture 1: "
    assert _decode_png(user["content"][1]["image_url"]["url"]).size == img.input_size == (1008, 504)
    assert assistant == {"role": "assistant", "content": "an answer"}
    assert follow_up == {"role": "user", "content": "and now?"}


def test_vllm_video_form_carries_the_true_frame_times():
    """vLLM: frames as one data:video/jpeg URL, their times in media_io_kwargs, no resampling on the server."""
    video = _frames()
    request = GenerationRequest(turns=(Turn("user", "when?", (Media("video", "v.mp4"),)),))
    body = build_payload("m", Q25, request, (), (video,), "vllm")
    part = body["messages"][0]["content"][0]
    assert part["type"] == "video_url" and part["video_url"]["url"].startswith("data:video/jpeg;base64,")
    frames = part["video_url"]["url"].split(",", 1)[1].split(",")
    assert len(frames) == 4 and Image.open(io.BytesIO(base64.b64decode(frames[0]))).size == (84, 56)
    meta = body["media_io_kwargs"]["video"]
    expected = video.processor_metadata()
    assert meta["num_frames"] == -1 and meta["do_sample_frames"] is False
    assert {k: meta[k] for k in ("fps", "frames_indices", "total_num_frames", "duration")} == {
        k: expected[k] for k in ("fps", "frames_indices", "total_num_frames", "duration")}
    # The processor's rate, len(indices) / total * fps, is exactly our sampling rate.
    assert len(meta["frames_indices"]) / meta["total_num_frames"] * meta["fps"] == pytest.approx(2.0)
    assert body["mm_processor_kwargs"] == {"do_sample_frames": False}
    with pytest.raises(UserError, match="one video per request"):
        two = GenerationRequest(turns=(Turn("user", "?", (Media("video", "a.mp4"), Media("video", "b.mp4"))),))
        build_payload("m", Q25, two, (), (video, _frames(6)), "vllm")


def test_transformers_serve_video_form_is_timed_frames():
    """transformers serve cannot take Qwen-VL video: frames go as images, each after its time on the clip's clock."""
    request = GenerationRequest(turns=(Turn("user", "when?", (Media("video", "v.mp4"),)),))
    body = build_payload("m", Q25, request, (), (_frames(),), "transformers")
    parts = body["messages"][0]["content"]
    assert [p.get("text") for p in parts[0:8:2]] == ["<0.0 seconds>", "<0.5 seconds>", "<1.0 seconds>",
                                                      "<1.5 seconds>"]
    assert all(p["type"] == "image_url" for p in parts[1:8:2]) and parts[8] == {"type": "text", "text": "when?"}
    assert _decode_png(parts[1]["image_url"]["url"]).size == (84, 56)
    size = body["chat_template_kwargs"]["processor_kwargs"]["images_kwargs"]["size"]
    assert size == {"shortest_edge": 784, "longest_edge": 16384 * 784}  # the server's resize is a no-op
    assert "media_io_kwargs" not in body


def test_sampling_in_each_servers_vocabulary():
    sampled = GenerationRequest(turns=(user_turn("x"),), sampling=SamplingParams(
        max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1, seed=5))
    assert sampling_fields(sampled, "vllm") == {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "seed": 5,
                                                "top_k": 20, "repetition_penalty": 1.1}
    assert sampling_fields(sampled, "transformers") == {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9,
                                                        "seed": 5, "frequency_penalty": 0.1}
    assert sampling_fields(sampled, "openai") == {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "seed": 5}
    greedy = GenerationRequest(turns=(user_turn("x"),), sampling=SamplingParams(max_new_tokens=3, temperature=0.0,
                                                                                repetition_penalty=1.0))
    assert sampling_fields(greedy, "vllm") == {"max_tokens": 3, "temperature": 0.0, "repetition_penalty": 1.0}


@pytest.mark.parametrize(("line", "text", "finish", "done"), [
    ('data: {"choices":[{"delta":{"content":"Hi"},"index":0}]}', "Hi", None, False),
    ('data: {"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"completion_tokens":3}}', "", "length",
     False),
    ("data: [DONE]", "", None, True),
])
def test_event_stream_lines(line, text, finish, done):
    event = parse_sse_line(line)
    assert (event.text, event.finish_reason, event.done) == (text, finish, done)


@pytest.mark.parametrize("line", ["", ": keep-alive", "event: message"])
def test_event_stream_ignores_blank_lines_and_comments(line):
    assert parse_sse_line(line) is None


@pytest.mark.parametrize(("line", "message"), [
    ('data: {"error": "CUDA out of memory"}', "failed during generation: CUDA out of memory"),
    ('data: {"error": {"message": "bad frames", "code": 500}}', "failed during generation: bad frames"),
    ("<html>502 Bad Gateway</html>", "not an OpenAI event stream"),
    ("data: {not json", "not JSON"),
])
def test_event_stream_errors_are_clear(line, message):
    with pytest.raises(GenerationError, match=message):
        parse_sse_line(line)


def test_finish_reasons():
    assert [map_finish_reason(r) for r in ("stop", "length", "abort", "tool_calls", None, "weird")] == [
        "stop", "length", "cancelled", "stop", "stop", "stop"]


@pytest.mark.parametrize(("status", "body", "kind", "message"), [
    (401, '{"error": {"message": "Invalid API key"}}', UserError, "refused the API key .*--api-key"),
    (404, '{"error": {"message": "The model `x` does not exist."}}', UserError, "does not serve model 'x'"),
    (400, '{"detail": "Server is pinned to \'/m\'; requested \'x\'."}', UserError, "does not serve model 'x'"),
    (400, '{"error": {"message": "maximum context length is 4096 tokens"}}', UserError,
     "maximum context length.*lower the max image tokens.*--max-model-len"),
    (500, "Internal Server Error", GenerationError, r"failed \(HTTP 500\): Internal Server Error"),
])
def test_http_errors_say_what_to_do(status, body, kind, message):
    err = http_error(status, body, base="http://h/v1", model="x")
    assert type(err) is kind
    with pytest.raises(kind, match=message):
        raise err


# ---- flags -----------------------------------------------------------------------------------------
def _parse(argv: list[str], env: dict[str, str] | None = None):
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        parser = argparse.ArgumentParser()
        add_serve_args(parser)
        return parser.parse_args(argv)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_flags_and_env_choose_the_backend():
    ns = _parse(["--backend", "openai", "--api-base", "http://x:8000/v1", "--model", "Qwen/Qwen2.5-VL-7B-Instruct",
                 "--api-key", KEY, "--api-timeout", "30"])
    opts = backend_options(ns)
    assert (opts.kind, opts.api_base, opts.api_key, opts.api_timeout_s) == ("openai", "http://x:8000/v1", KEY, 30.0)
    assert KEY not in repr(opts)
    assert serve_config(ns).concurrency == 16
    assert serve_config(_parse([])).concurrency == 1 and serve_config(_parse([])).backend.kind == "transformers"
    env = {"QVL_BACKEND": "openai", "QVL_API_BASE": "http://e/v1", "QVL_API_KEY": KEY, "QVL_FAMILY": "qwen3-vl",
           "QVL_API_TIMEOUT": "12", "QVL_CONCURRENCY": "4"}
    ns = _parse(["--model", "served"], env)
    opts = backend_options(ns)
    assert (opts.kind, opts.api_base, opts.family, opts.api_timeout_s) == ("openai", "http://e/v1", "qwen3-vl", 12.0)
    assert serve_config(ns).concurrency == 4
    backend = open_backend(opts)
    assert isinstance(backend, OpenAIBackend) and backend.family is FAMILIES["qwen3_vl"]
    assert KEY not in repr(backend)
    with pytest.raises(UserError, match="needs --api-base"):
        open_backend(BackendOptions(load=LoadOptions(model="m"), kind="openai"))
    with pytest.raises(UserError, match="--concurrency must be between"):
        serve_config(_parse(["--concurrency", "1000"]))


# ---- a deliberately broken server --------------------------------------------------------------------
class _Broken(BaseHTTPRequestHandler):
    """Answers /models normally; /chat/completions misbehaves as the first path segment says."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # "slow": the client has given up, as it should
            pass

    def do_GET(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        if mode == "auth" or (mode == "key" and self.headers.get("Authorization") != f"Bearer {KEY}"):
            self._send(401, '{"error": {"message": "Invalid API key"}}')
        elif self.path.endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "test"}]}))
        else:
            self._send(404, "{}")

    def do_POST(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if mode == "fail":
            self._send(500, '{"error": {"message": "the engine died"}}')
        elif mode == "garbage":
            self._send(200, "<html><body>Welcome to nginx</body></html>\n", "text/event-stream")
        elif mode == "slow":
            time.sleep(3)
            self._send(200, "data: [DONE]\n\n", "text/event-stream")
        elif mode == "cut":
            self._send(200, 'data: {"choices":[{"delta":{"content":"Hel"},"index":0}]}\n\n', "text/event-stream")


@pytest.fixture(scope="module")
def broken():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _drain(backend: OpenAIBackend) -> str:
    text, _stats = backend.generate(GenerationRequest(turns=(user_turn("hi"),)))
    return text


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "kind", "message"), [
    ("fail", GenerationError, r"failed \(HTTP 500\): the engine died"),
    ("garbage", GenerationError, "not an OpenAI event stream: '<html>"),
    ("slow", GenerationError, "sent nothing for 1 s while we waited for the first token.*--api-timeout"),
    ("cut", GenerationError, "ended the stream before the answer was finished"),
])
def test_broken_servers_give_clear_errors(broken, mode, kind, message):
    backend = OpenAIBackend("m", f"{broken}/{mode}/v1", family="qwen2.5-vl", timeout_s=1.0)
    with pytest.raises(kind, match=message):
        _drain(backend)


@pytest.mark.timeout(60)
def test_refused_key_and_unreachable_server(broken):
    with pytest.raises(UserError, match="refused the API key") as err:
        OpenAIBackend("m", f"{broken}/auth/v1", api_key=KEY, family="qwen2.5-vl").load()
    assert KEY not in str(err.value)
    keyed = OpenAIBackend("m", f"{broken}/key/v1", api_key=KEY, family="qwen2.5-vl")
    assert keyed.load().models == ("m",) and keyed.flavor == "openai"  # the key travels as a bearer token
    assert isinstance(keyed, Backend) and KEY not in repr(keyed) + keyed.status().summary()
    with pytest.raises(UserError, match="refused the API key"):
        OpenAIBackend("m", f"{broken}/key/v1", api_key="wrong", family="qwen2.5-vl").load()
    with pytest.raises(ModelLoadError, match=f"Cannot reach the model server at http://127.0.0.1:{(p := free_port())}"):
        OpenAIBackend("m", f"http://127.0.0.1:{p}/v1", family="qwen2.5-vl").load()


# ---- a real transformers serve behind the app ----------------------------------------------------------
@pytest.fixture(scope="module")
def servers(model_server, ckpt_dir, tmp_path_factory):
    """Four real servers, started together: scripted grounding, document and video answers, random weights."""
    logs = tmp_path_factory.mktemp("servers")
    models = {"ground": ckpt_dir("qwen2_5_vl", scripted_answer("qwen2_5_vl")),
              "doc": ckpt_dir("qwen2_5_vl", REPORT_HTML),
              "video": ckpt_dir("qwen2_5_vl", VIDEO_ANSWER),
              "random": ckpt_dir("qwen2_5_vl")}
    running = {name: model_server(model, logs / f"{name}.log") for name, model in models.items()}
    try:
        for server in running.values():
            server.wait_ready()
        yield running
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(scope="module")
def apps(servers):
    """The app launched from its flags with --backend openai against each server."""
    from ui.launch import launch

    demos = {}
    for name, server in servers.items():
        ns = _parse(["--backend", "openai", "--api-base", server.api_base, "--model", server.model,
                     "--port", str(free_port())])
        demos[name] = launch(serve_config(ns), block=False)
    yield demos
    for demo in demos.values():
        demo.close()


@pytest.mark.timeout(600)
def test_app_chat_through_the_server(apps, servers, tmp_path):
    demo = apps["ground"]
    assert OpenAIBackend(servers["ground"].model, servers["ground"].api_base).flavor == "transformers"
    # --backend openai lets 16 GPU-queue events run at once, so the server can batch them.
    assert {fn.concurrency_limit for fn in demo.fns.values() if fn.concurrency_id == "gpu"} == {16}
    photo = tmp_path / "photo.png"
    Image.new("RGB", ORIGINAL, (240, 240, 240)).save(photo)
    client = Client(demo.local_url, verbose=False)
    reply = client.predict(message={"text": "Where is the red box?", "files": [handle_file(str(photo))]},
                           api_name="/chat")
    assert reply == scripted_answer("qwen2_5_vl")
    follow_up = client.predict(message={"text": "And now?", "files": []}, api_name="/chat")
    assert follow_up == scripted_answer("qwen2_5_vl")


@pytest.mark.timeout(600)
def test_grounding_through_the_server_is_exact_in_original_pixels(apps, tmp_path):
    """Our resize fixes the size the model sees; the server's own resize is a no-op, so boxes map back exactly."""
    photo = tmp_path / "photo.png"
    img = Image.new("RGB", ORIGINAL, (240, 240, 240))
    img.paste((200, 30, 30), (250, 125, 500, 375))
    img.save(photo)
    _drawn, detections = Client(apps["ground"].local_url, verbose=False).predict(
        image=handle_file(str(photo)), text="red box", preset="Detect", max_image_tokens=1280,
        max_new_tokens=2048, api_name="/ground")
    boxes = [d for d in detections if d["bbox_2d"]]
    points = [d for d in detections if d["point_2d"]]
    assert boxes[0]["bbox_2d"] == pytest.approx(list(EXPECTED_BOX), abs=1.0)
    assert points[0]["point_2d"] == pytest.approx(list(EXPECTED_POINT), abs=1.0)
    assert planned_input_size(ORIGINAL, Q25, 1280)[0] == (1008, 504)


@pytest.mark.timeout(600)
def test_the_server_sees_exactly_our_image_size(servers, make_session, tmp_path):
    """Same prompt tokens on the server as in process: the server's processor kept our size (its resize did nothing),
    so the size the coordinates are mapped with is the size the model really saw."""
    photo = tmp_path / "odd.png"
    Image.new("RGB", (517, 211), "blue").save(photo)  # not a multiple of 28 either way
    served = OpenAIBackend(servers["ground"].model, servers["ground"].api_base)
    local = make_session("qwen2_5_vl", scripted_answer("qwen2_5_vl"))
    for tokens in (64, 1280):
        request = GenerationRequest(turns=(user_turn("Find it.", [str(photo)]),), max_image_tokens=tokens,
                                    sampling=SamplingParams(max_new_tokens=8))
        text, stats = served.generate(request)
        prepared = local.prepare(request)
        assert stats.image_input_sizes == (prepared.images[0].input_size,)
        assert stats.image_original_sizes == ((517, 211),)
        assert stats.prompt_tokens == prepared.prompt_tokens
        assert stats.peak_gpu_mb is None and stats.finish_reason == "length" and stats.completion_tokens == 8
        assert text == scripted_answer("qwen2_5_vl")[: len(text)] and text


@pytest.mark.timeout(600)
def test_documents_through_the_server(apps, tmp_path):
    pdf = make_pdf(tmp_path / "report.pdf", 1)
    html, markdown, layout = Client(apps["doc"].local_url, verbose=False).predict(
        file=handle_file(str(pdf)), api_name="/parse_document")
    assert "<h2" in html and "| Item | Value |" in markdown
    assert layout[0]["blocks"][0]["kind"] == "heading"


@pytest.mark.timeout(600)
def test_video_qa_through_the_server(apps):
    text, spans = Client(apps["video"].local_url, verbose=False).predict(
        video=handle_file(CLOCK), question="When does it turn blue?", api_name="/video_qa")
    assert text == VIDEO_ANSWER
    assert (spans[0]["start"], spans[0]["end"]) == (4.0, 5.0)


@pytest.mark.timeout(600)
def test_stop_ends_the_servers_generation(apps, servers):
    """Stop closes our stream; the server sees the disconnect and aborts its generate (its trace line says so)."""
    server = servers["random"]
    assert TRACE not in server.log_text()
    job = Client(apps["random"].local_url, verbose=False).submit(
        message={"text": "never stop", "files": []}, max_new_tokens=30000, api_name="/chat")
    while not job.outputs():
        time.sleep(0.05)
    job.cancel()
    while TRACE not in server.log_text():  # the pytest timeout is the hang guard
        time.sleep(0.1)
    line = next(x for x in server.log_text().splitlines() if TRACE in x)
    assert int(line.split(TRACE)[1].split()[0]) < 30000
    reply = Client(apps["random"].local_url, verbose=False).predict(
        message={"text": "short", "files": []}, max_new_tokens=4, api_name="/chat")
    assert isinstance(reply, (str, dict, list))


@pytest.mark.timeout(600)
def test_wrong_model_name_lists_what_the_server_serves(servers):
    backend = OpenAIBackend("Qwen/Qwen2.5-VL-7B-Instruct", servers["ground"].api_base)
    with pytest.raises(ModelLoadError, match="does not serve model 'Qwen/Qwen2.5-VL-7B-Instruct'.*pinned"):
        backend.load()


@pytest.mark.timeout(600)
def test_cli_ground_against_the_server(qvl_cli, servers, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", ORIGINAL, (240, 240, 240)).save(photo)
    out = tmp_path / "boxes.json"
    res = qvl_cli("ground", str(photo), "red box", "--backend", "openai", "--api-base", servers["ground"].api_base,
                  "--model", servers["ground"].model, "--json", str(out), env=child_env(QVL_API_KEY=KEY))
    assert res.returncode == 0, res.stderr
    detections = json.loads(out.read_text())
    assert next(d for d in detections if d["bbox_2d"])["bbox_2d"] == pytest.approx(list(EXPECTED_BOX), abs=1.0)
    assert "model saw 1008x504" in res.stderr and KEY not in res.stderr + res.stdout
