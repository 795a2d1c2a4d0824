"""The server keeps a bounded number of sessions' state: memory levels off however many clients come and go."""

from __future__ import annotations

from gradio_client import Client

import ui.launch
from ui.config import ServeConfig
from ui.launch import launch_kwargs


def test_the_server_keeps_the_state_of_at_most_max_sessions(make_session, launch_app, monkeypatch):
    """Regression: Gradio's default kept 10,000 sessions' state (~0.4 MB each: its copy of the page config), so a
    soak of 32 clients a round grew the server by ~13 MB every round, with no end in sight."""
    assert ui.launch.MAX_SESSIONS <= 1000
    monkeypatch.setattr(ui.launch, "MAX_SESSIONS", 3)
    session = make_session("qwen2_5_vl")
    config = ServeConfig(load=session.options)
    demo = launch_app(session, config, state_session_capacity=launch_kwargs(config)["state_session_capacity"])
    for _ in range(6):
        client = Client(demo.local_url, verbose=False)
        client.predict(api_name="/chat_reset")
        client.close()
    assert len(demo.state_holder.session_data) == 3
