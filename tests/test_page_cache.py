"""The resumable page cache: a stale, incompatible or corrupt entry re-runs its page instead of ending the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qvl_core.tasks.documents import JobOptions, PageCache, run_job
from tests.test_docparse_task import REPORT_HTML, make_pdf


def _job(session, pdf: Path, cache: PageCache):
    *_, last = run_job(session, [str(pdf)], JobOptions(), cache=cache)
    return last


def _entry(cache_root: Path) -> Path:
    (entry,) = cache_root.rglob("page-0001.json")
    return entry


def _stats_edit(change):
    def edit(text: str) -> str:
        data = json.loads(text)
        change(data["stats"])
        return json.dumps(data)

    return edit


DAMAGE = {
    "not JSON": lambda _text: '{"raw": "cut off',
    "empty file": lambda _text: "",
    "not UTF-8": lambda _text: "\udcff",
    "JSON but a list": lambda _text: "[]",
    "raw not text": lambda text: json.dumps({**json.loads(text), "raw": 7}),
    "no stats": lambda text: json.dumps({"raw": json.loads(text)["raw"]}),
    "a field from a newer version": _stats_edit(lambda s: s.update(a_field_from_the_future=3)),
    "a field from an older version": _stats_edit(lambda s: s.pop("image_original_sizes")),
    "no input size": _stats_edit(lambda s: s.update(image_input_sizes=[])),
    "input size not a pair": _stats_edit(lambda s: s.update(image_input_sizes=[[868]])),
    "input size not positive": _stats_edit(lambda s: s.update(image_input_sizes=[[0, 1120]])),
    "tokens as text": _stats_edit(lambda s: s.update(completion_tokens="12")),
    "unknown finish reason": _stats_edit(lambda s: s.update(finish_reason="maybe")),
    "deeply nested": lambda _text: "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_bad_cache_entry_reruns_its_page(make_session, tmp_path, damage):
    """Regression: PageCache.get built GenerationStats(**entry) unchecked, so an entry written by another
    version (a stats field added or dropped) raised TypeError and aborted the whole document job."""
    session = make_session("qwen2_5_vl", REPORT_HTML)
    pdf = make_pdf(tmp_path / "report.pdf", 1)
    cache = PageCache(tmp_path / "cache", session, JobOptions())
    first = _job(session, pdf, cache)
    assert [p.cached for p in first.done] == [False]
    entry = _entry(tmp_path / "cache")
    entry.write_text(DAMAGE[damage](entry.read_text(encoding="utf-8")), encoding="utf-8", errors="surrogateescape")

    again = _job(session, pdf, PageCache(tmp_path / "cache", session, JobOptions()))
    assert again.finished and not again.errors
    assert [p.cached for p in again.done] == [False]  # parsed afresh
    assert again.done[0].raw == REPORT_HTML and again.done[0].blocks
    # ... and the fresh page replaced the bad entry, so the next run is served from the cache again.
    third = _job(session, pdf, PageCache(tmp_path / "cache", session, JobOptions()))
    assert [p.cached for p in third.done] == [True]
    assert third.done[0].blocks == again.done[0].blocks
