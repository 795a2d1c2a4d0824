"""Tier 3: Stop (prefill and decode), a vanishing client and faults, through the launched app, by order of events.

The model is instrumented, not replaced: `generate` and `forward` of the real tiny model are wrapped to log
every forward pass with its request, and whether that request's own stopping criterion already said "stop"
when the pass began. Gradio's Stop and a dropped connection must end the generation within one step, free
the GPU lock, and let the next queued request start; a fault inside one request must not break the next.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import uuid

import gradio as gr
import gradio.routes
import httpx
import pytest
import torch
from gradio_client import Client
from gradio_client.utils import Status

LONG = 20_000  # max_new_tokens that never run out during a test
GATE = "GATE-PREFILL"  # a request carrying this pauses inside its prefill forward until the test opens the gate
OOM = "FAULT-OOM"
CRASH = "FAULT-CRASH"


class Instrument:
    """Wraps the model's generate/forward: a log of passes per request, a prefill gate, injected faults."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.model = backend.inner.loaded.model
        self.tokenizer = backend.inner.loaded.processor.tokenizer
        self.threads: dict[threading.Thread, dict] = {}
        self.prefill_started = threading.Event()
        self.prefill_release = threading.Event()

    def _generate(self, original):
        def generate(*args, **kwargs):
            prompt = self.tokenizer.decode(kwargs["input_ids"][0])
            rid = max(r["id"] for r in self.backend.records if r["prompt"] == prompt)
            self.threads[threading.current_thread()] = {"rid": rid, "stop": kwargs.get("stopping_criteria"),
                                                        "prompt": prompt, "passes": 0}
            return original(*args, **kwargs)
        return generate

    def _forward(self, original):
        def forward(*args, **kwargs):
            state = self.threads.get(threading.current_thread())
            if state is None:
                return original(*args, **kwargs)
            rid, prefill = state["rid"], state["passes"] == 0
            state["passes"] += 1
            ids = kwargs.get("input_ids")
            # Did this request's own stop signal already say "stop" as this pass began?
            stopped = bool(state["stop"](ids, None).all()) if state["stop"] is not None and ids is not None else False
            self.backend.log("prefill" if prefill else ("pass-after-stop" if stopped else "decode"), rid)
            if prefill and GATE in state["prompt"]:
                self.prefill_started.set()
                self.prefill_release.wait(timeout=300)
            if prefill and OOM in state["prompt"]:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
            if not prefill and CRASH in state["prompt"]:
                raise RuntimeError("injected fault in a decode step")
            return original(*args, **kwargs)
        return forward

    @contextlib.contextmanager
    def installed(self):
        gen, fwd = self.model.generate, self.model.forward
        # wraps() keeps the signatures, which generate() inspects to validate its arguments.
        self.model.generate = functools.wraps(gen)(self._generate(gen))
        self.model.forward = functools.wraps(fwd)(self._forward(fwd))
        try:
            yield self
        finally:
            self.model.generate, self.model.forward = gen, fwd


@pytest.fixture(scope="module")
def app(recording_backend, launch_app):
    backend = recording_backend("qwen2_5_vl")
    inst = Instrument(backend)
    with inst.installed():
        yield launch_app(backend), backend, inst


def _rid(backend, marker: str) -> int:
    return next(r["id"] for r in backend.records if marker in r["last_user"])


def _index(backend, kind: str, rid: int) -> int:
    return backend.events.index((kind, rid))


def _wait(predicate, what: str, timeout: float = 120) -> None:
    """Hang guard for a condition another thread makes true (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _queued(job) -> bool:
    return job.status().code == Status.IN_QUEUE


def _assert_stopped_then_next_started(backend, stopped: int, following: int) -> None:
    """The stopped request ended within one pass of its stop signal, released, and only then the next began."""
    rec = backend.records[stopped]
    assert rec["finish"] == "closed" and rec["tokens"] < LONG
    assert backend.events.count(("prefill", stopped)) == 1
    assert backend.events.count(("pass-after-stop", stopped)) <= 1  # at most one step after Stop
    released = _index(backend, "released", stopped)
    assert _index(backend, "closing", stopped) < released
    assert released < _index(backend, "prefill", following) < _index(backend, "first", following)
    assert backend.records[following]["finish"] in ("stop", "length")


def _chat(client: Client, text: str, max_new_tokens: int):
    return client.submit(message={"text": text, "files": []}, max_new_tokens=max_new_tokens, api_name="/chat")


@pytest.mark.timeout(300)
def test_stop_during_decode_frees_the_gpu_within_a_step_and_the_next_request_starts(app):
    demo, backend, _ = app
    tag = uuid.uuid4().hex[:6]
    job_a = _chat(Client(demo.local_url, verbose=False), f"A-{tag} talk forever", LONG)
    _wait(lambda: len(job_a.outputs()) >= 3, "A to stream")
    job_b = _chat(Client(demo.local_url, verbose=False), f"B-{tag} then me", 6)
    _wait(lambda: _queued(job_b), "B to wait in the queue")
    job_a.cancel()  # what the Stop button does
    job_b.result(timeout=120)
    _assert_stopped_then_next_started(backend, _rid(backend, f"A-{tag}"), _rid(backend, f"B-{tag}"))
    assert not backend.inner._gpu_lock.locked()


@pytest.mark.timeout(300)
def test_stop_during_prefill_ends_after_the_prefill_and_the_next_request_starts(app, monkeypatch):
    demo, backend, inst = app
    tag = uuid.uuid4().hex[:6]
    # Observe the moment Gradio receives the Stop (its /cancel route), to press it while prefill is running.
    cancel_received = threading.Event()
    real_cancel_tasks = gradio.routes.cancel_tasks

    async def noting_cancel_tasks(task_ids):
        cancel_received.set()
        return await real_cancel_tasks(task_ids)

    monkeypatch.setattr(gradio.routes, "cancel_tasks", noting_cancel_tasks)
    inst.prefill_started.clear()
    inst.prefill_release.clear()
    job_a = _chat(Client(demo.local_url, verbose=False), f"A-{tag} {GATE} a long prompt", LONG)
    try:
        assert inst.prefill_started.wait(timeout=120), "A never reached its prefill"
        job_b = _chat(Client(demo.local_url, verbose=False), f"B-{tag} then me", 6)
        _wait(lambda: _queued(job_b), "B to wait in the queue")
        # Gradio's /cancel waits for the generator to come back from the prefill, so press Stop from a thread.
        stopper = threading.Thread(target=job_a.cancel)
        stopper.start()
        assert cancel_received.wait(timeout=120), "the Stop never reached the server"
        a = _rid(backend, f"A-{tag}")
        assert ("first", a) not in backend.events  # Stop landed while the prefill was still running
    finally:
        inst.prefill_release.set()
    stopper.join(timeout=120)
    job_b.result(timeout=120)
    _assert_stopped_then_next_started(backend, a, _rid(backend, f"B-{tag}"))
    assert not backend.inner._gpu_lock.locked()


def _join_raw(demo, session_hash: str, text: str, max_new_tokens: int) -> None:
    """Join /chat's queue as the browser does (POST /queue/join); the answer streams on /queue/data."""
    fn_index, fn = next((i, fn) for i, fn in demo.fns.items() if fn.api_name == "chat")
    overrides = {"message": {"text": text, "files": []}, "max_new_tokens": max_new_tokens}
    data = [None if isinstance(c, gr.State) else overrides.get(c.label, c.value) for c in fn.inputs]
    r = httpx.post(f"{demo.local_url.rstrip('/')}/gradio_api/queue/join", timeout=30,
                   json={"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None,
                         "trigger_id": None})
    r.raise_for_status()


def _queue_size(url: str) -> int:
    return httpx.get(f"{url}/gradio_api/queue/status", timeout=30).json()["queue_size"]


@pytest.mark.timeout(300)
def test_a_client_that_disconnects_mid_stream_cancels_its_generation(app):
    demo, backend, _ = app
    url, tag, session_hash = demo.local_url.rstrip("/"), uuid.uuid4().hex[:6], uuid.uuid4().hex[:11]
    _join_raw(demo, session_hash, f"A-{tag} stream to nobody", LONG)
    with httpx.Client(timeout=60) as http, http.stream("GET", f"{url}/gradio_api/queue/data",
                                                       params={"session_hash": session_hash}) as events:
        generating = 0
        for line in events.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["msg"] == "process_generating":
                generating += 1
                if generating == 1:
                    job_b = _chat(Client(demo.local_url, verbose=False), f"B-{tag} then me", 6)
                    _wait(functools.partial(_queued, job_b), "B to wait in the queue")
                if generating >= 3:
                    break
    # The connection is gone (the tab was closed); nobody pressed Stop.
    job_b.result(timeout=120)
    _assert_stopped_then_next_started(backend, _rid(backend, f"A-{tag}"), _rid(backend, f"B-{tag}"))


@pytest.mark.timeout(300)
def test_a_queued_client_that_disconnects_never_reaches_the_model(app):
    demo, backend, _ = app
    url, tag = demo.local_url.rstrip("/"), uuid.uuid4().hex[:6]
    arrived, release = backend.hold(f"H-{tag}")
    holder = _chat(Client(demo.local_url, verbose=False), f"H-{tag} hold the GPU", 2)
    try:
        assert arrived.wait(timeout=120)
        session_hash = uuid.uuid4().hex[:11]
        _join_raw(demo, session_hash, f"Q-{tag} I will leave", 4)
        with httpx.Client(timeout=60) as http, http.stream("GET", f"{url}/gradio_api/queue/data",
                                                           params={"session_hash": session_hash}) as events:
            for line in events.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["msg"] == "estimation":
                    break  # told its place in the queue; now the tab closes
        _wait(lambda: _queue_size(url) == 0, "the queue to drop the departed client")
    finally:
        release.set()
    holder.result(timeout=120)
    after = Client(demo.local_url, verbose=False).predict(message={"text": f"N-{tag} next", "files": []},
                                                          max_new_tokens=3, api_name="/chat")
    assert isinstance(after, str)
    assert not any(f"Q-{tag}" in r["last_user"] for r in backend.records)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("marker", "message"), [(OOM, "ran out of memory"), (CRASH, "injected fault")])
def test_a_fault_in_one_request_leaves_the_model_serving_the_next(app, marker, message):
    demo, backend, _ = app
    tag = uuid.uuid4().hex[:6]
    arrived, release = backend.hold(f"F-{tag}")
    job_f = _chat(Client(demo.local_url, verbose=False), f"F-{tag} {marker}", 50)
    try:
        assert arrived.wait(timeout=120)
        job_b = _chat(Client(demo.local_url, verbose=False), f"B-{tag} then me", 6)
        _wait(lambda: _queued(job_b), "B to wait in the queue")
    finally:
        release.set()
    with pytest.raises(Exception, match=message):
        job_f.result(timeout=120)
    job_b.result(timeout=120)
    f, b = _rid(backend, f"F-{tag}"), _rid(backend, f"B-{tag}")
    assert backend.records[f]["error"] and message in backend.records[f]["error"]
    assert _index(backend, "released", f) < _index(backend, "prefill", b)
    assert backend.records[b]["finish"] in ("stop", "length")
    assert not backend.inner._gpu_lock.locked()
