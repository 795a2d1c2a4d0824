"""A document-parsing job: files -> pages -> one generation per page -> HTML, Markdown, text, layout, fields.

Every output mode asks the model for its native "QwenVL HTML", so each page keeps its layout
boxes; Markdown and plain text are derived from that HTML. "Extract fields" asks for a JSON object instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import html as html_lib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, get_args

import json_repair
from PIL import Image

from qvl_core.engine.backend import Backend
from qvl_core.engine.messages import user_turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.engine.types import FinishReason, GenerationRequest, GenerationStats, SessionStatus, so_far
from qvl_core.errors import GenerationError, UserError
from qvl_core.media.documents import DEFAULT_DPI, MAX_PAGE_PIXELS, DocumentPage, check_dpi, load_document
from qvl_core.parse.html import looks_like_html, preview_document, sanitize_html, strip_fences
from qvl_core.parse.layout import LayoutBlock, extract_layout
from qvl_core.parse.markdown import html_to_markdown, html_to_text
from qvl_core.parse.thinking import answer_part
from qvl_core.settings import MAX_FIELD_NAME_CHARS, MAX_FIELD_SPEC_CHARS, MAX_PAGE_RANGE_CHARS, check_text

MODES = ("QwenVL HTML", "Markdown", "Plain text", "Extract fields → JSON")
HTML_PROMPT = "QwenVL HTML"
# A dense page is thousands of tokens of HTML (the cookbook's 1024 cut pages short); the context bounds the rest.
DEFAULT_DOC_MAX_NEW_TOKENS = 8192
# A random-weight checkpoint never writes its end token, so each page runs to the cap: at 8192 one demo page
# held the shared GPU queue for minutes. A scripted one stops after its answer, like a real model.
RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS = 256
DEFAULT_DOC_IMAGE_TOKENS = 4096  # small print needs resolution: an A4 page at 150 dpi is ~2.2k tokens at 28 px
MAX_FIELDS = 100

log = logging.getLogger(__name__)


def default_max_new_tokens(status: SessionStatus) -> int:
    """The page budget a job starts with: the real one, or a short one for a model that never stops."""
    noise = status.random_weights and not status.scripted
    return RANDOM_WEIGHTS_DOC_MAX_NEW_TOKENS if noise else DEFAULT_DOC_MAX_NEW_TOKENS


@dataclass(frozen=True)
class FieldSpec:
    """What to extract: field names (from a list or a JSON schema's properties) and the schema if given."""

    names: tuple[str, ...]
    schema: dict | None = None

    def prompt(self) -> str:
        if self.schema is not None:
            return ("Extract the information in this document as a JSON object that matches this JSON schema. "
                    "Answer with the JSON object only, using null for anything not in the document.\n"
                    + json.dumps(self.schema, ensure_ascii=False))
        keys = ", ".join(json.dumps(n, ensure_ascii=False) for n in self.names)
        return (f"Extract these fields from the document: {keys}. Answer with one JSON object whose keys are "
                "exactly these field names, using null for a field that is not in the document.")


def parse_fields(spec: str) -> FieldSpec:
    """A comma/newline separated list of field names, or a JSON schema with "properties"."""
    text = check_text("The fields to extract (list or JSON schema)", spec or "", MAX_FIELD_SPEC_CHARS).strip()
    if not text:
        raise UserError("List the fields to extract (e.g. invoice number, date, total) or paste a JSON schema.")
    if text.startswith("{"):
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"The JSON schema is not valid JSON: {exc.msg} (line {exc.lineno}).") from None
        except RecursionError:
            raise UserError("The JSON schema is nested too deeply to read.") from None
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict) or not props:
            raise UserError('The JSON schema needs a non-empty "properties" object naming the fields.')
        names = tuple(str(k) for k in props)
    else:
        names = tuple(dict.fromkeys(n.strip() for n in text.replace("\n", ",").split(",") if n.strip()))
        schema = None
    if len(names) > MAX_FIELDS:
        raise UserError(f"{len(names)} fields asked for, over the limit of {MAX_FIELDS}.")
    for name in names:
        check_text(f"Field name {name[:40]!r}{'…' if len(name) > 40 else ''}", name, MAX_FIELD_NAME_CHARS)
    return FieldSpec(names, schema)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "array": (list,),
    "object": (dict,), "null": (type(None),),
}


def validate_fields(answer: str, spec: FieldSpec) -> tuple[dict[str, Any], list[str]]:
    """The model's JSON object (repaired if need be) and a list of problems found against the spec."""
    answer = answer_part(answer)  # a draft object inside a thinking model's reasoning is not the answer
    value = json_repair.loads(strip_fences(answer) or answer) if answer.strip() else None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if not isinstance(value, dict):
        return {}, ["The answer is not a JSON object."]
    problems = [f"Missing field: {n}" for n in spec.names if n not in value]
    problems += [f"Unexpected field: {k}" for k in value if k not in spec.names]
    if spec.schema:
        props = spec.schema.get("properties", {})
        required = spec.schema.get("required", [])
        problems += [f"Required field is null: {n}" for n in required if n in value and value[n] is None]
        for name, sub in props.items():
            types = sub.get("type") if isinstance(sub, dict) else None
            if name not in value or value[name] is None or types is None:
                continue
            allowed = tuple(t for ty in ([types] if isinstance(types, str) else types) for t in _JSON_TYPES.get(ty, ()))
            bad_bool = isinstance(value[name], bool) and bool not in allowed
            if allowed and (not isinstance(value[name], allowed) or bad_bool):
                problems.append(f"Field {name} should be {types}, got {type(value[name]).__name__}")
    return value, problems


@dataclass(frozen=True)
class PageResult:
    """One parsed page. `html` is the model's HTML (untrusted); views must use `safe_html`."""

    source: str
    page_number: int
    n_pages: int
    image: Image.Image
    raw: str
    mode: str
    stats: GenerationStats
    input_size: tuple[int, int]
    blocks: tuple[LayoutBlock, ...] = ()
    fields: dict | None = None
    field_problems: tuple[str, ...] = ()
    cached: bool = False  # taken from an earlier run's PageCache, not generated now
    reasoning: str = ""  # a thinking model's reasoning, never parsed: `raw` is the answer only; plain text to show

    @property
    def label(self) -> str:
        return f"{self.source} · page {self.page_number}/{self.n_pages}"

    @property
    def truncated(self) -> bool:
        return self.stats.finish_reason == "length"

    @property
    def is_html(self) -> bool:
        return self.mode != MODES[3] and looks_like_html(self.raw)

    @property
    def html(self) -> str:
        return strip_fences(self.raw) if self.is_html else ""

    @property
    def safe_html(self) -> str:
        if self.is_html:
            return sanitize_html(self.html)
        return f"<pre>{html_lib.escape(self.raw)}</pre>"

    @property
    def markdown(self) -> str:
        if self.is_html:
            return html_to_markdown(self.html)
        if self.fields is not None:
            return "```json\n" + json.dumps(self.fields, indent=2, ensure_ascii=False) + "\n```"
        return self.raw

    @property
    def text(self) -> str:
        return html_to_text(self.html) if self.is_html else self.raw

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "source": self.source, "page": self.page_number, "pages": self.n_pages,
            "image_size": list(self.image.size), "input_size": list(self.input_size),
            "truncated": self.truncated, "is_html": self.is_html,
            "blocks": [b.to_json() for b in self.blocks],
        }
        if self.fields is not None:
            out["fields"] = self.fields
            out["field_problems"] = list(self.field_problems)
        if self.reasoning:  # only a thinking model's pages: the layout above never came from it
            out["reasoning"] = self.reasoning
        return out


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands: pages done, the page being generated (with its text and tokens so far), errors per
    file."""

    done: tuple[PageResult, ...]
    total_pages: int
    current: str = ""
    partial: str = ""
    errors: tuple[str, ...] = ()
    finished: bool = False
    tokens: int = 0  # generated so far for the current page: progress while no page finishes
    reasoning: str = ""  # the current page's reasoning so far (`partial` is its answer so far)


@dataclass(frozen=True)
class PageStep:
    """Progress of one page: the answer and reasoning so far, the tokens so far, and the result once it is done."""

    raw: str
    reasoning: str = ""
    tokens: int = 0
    result: PageResult | None = None


@dataclass
class JobOptions:
    mode: str = MODES[0]
    pages: str | None = None
    dpi: float = DEFAULT_DPI
    max_pages: int | None = None  # None: the backend's `limits.max_pdf_pages`; a smaller number may narrow it
    max_image_tokens: int = DEFAULT_DOC_IMAGE_TOKENS
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=DEFAULT_DOC_MAX_NEW_TOKENS))
    fields: FieldSpec | None = None
    clamp_pages: bool = False  # one range over many files: pages past a file's end are skipped, not an error
    thinking: bool | None = None  # None: the model's default (see GenerationRequest); only the answer is parsed
    thinking_budget: int = DEFAULT_THINKING_BUDGET

    def __post_init__(self) -> None:
        if self.pages is not None:
            check_text("The page range", self.pages, MAX_PAGE_RANGE_CHARS)
        check_dpi(self.dpi)  # before any file is opened: "abc" or 0 named as such, not a ValueError or a default
        if self.mode not in MODES:
            raise UserError(f"Output mode must be one of {', '.join(MODES)}; got {self.mode!r}.")
        if self.mode == MODES[3] and self.fields is None:
            raise UserError("Extract fields needs the fields to extract (a list or a JSON schema).")

    def prompt(self) -> str:
        return self.fields.prompt() if self.mode == MODES[3] and self.fields else HTML_PROMPT


def parse_page(session: Backend, page: DocumentPage, options: JobOptions, workdir: Path) -> Iterator[PageStep]:
    """Generate one page: steps while streaming, the last one with its PageResult. Only the answer is parsed:
    a draft block inside a thinking model's reasoning never becomes layout."""
    path = workdir / f"page-{page.page_number:04d}.png"
    page.image.save(path, compress_level=1)  # fast: the session decodes it once more, right away
    # The page was rendered (or decoded and downscaled) here, within MAX_PAGE_PIXELS: the upload limit is for
    # files people send, and this one is ours.
    request = GenerationRequest(turns=(user_turn(options.prompt(), [str(path)]),), sampling=options.sampling,
                                max_image_tokens=options.max_image_tokens, image_pixel_limit=MAX_PAGE_PIXELS,
                                thinking=options.thinking, thinking_budget=options.thinking_budget)
    with contextlib.closing(session.stream(request)) as stream:
        for raw, reasoning, chunk in so_far(stream):  # the answer only in raw: reasoning is kept apart
            if chunk.stats is None:
                yield PageStep(raw, reasoning, chunk.tokens)
                continue
            result = page_result(session, page, options.mode, raw, chunk.stats, options.fields, reasoning=reasoning)
            yield PageStep(raw, reasoning, chunk.tokens, result)


def page_result(session: Backend, page: DocumentPage, mode: str, raw: str, stats: GenerationStats,
                fields: FieldSpec | None, *, reasoning: str = "") -> PageResult:
    """Turn a finished answer into a PageResult (layout in original page pixels, or validated fields)."""
    input_size = stats.image_input_sizes[0]
    result = PageResult(page.source_name, page.page_number, page.n_pages, page.image, raw, mode, stats, input_size,
                        reasoning=reasoning)
    if mode == MODES[3] and fields is not None:
        values, problems = validate_fields(raw, fields)
        return replace(result, fields=values, field_problems=tuple(problems))
    if result.is_html:
        blocks = extract_layout(result.html, family=session.family, input_size=input_size,
                                image_size=page.image.size, page=page.page_number)
        return replace(result, blocks=tuple(blocks))
    return result


def _sizes(value: Any) -> tuple[tuple[int, int], ...] | None:
    """[[w, h], ...] of positive integers as a tuple of pairs, else None."""
    if not isinstance(value, list):
        return None
    pairs = [tuple(v) for v in value if isinstance(v, list) and len(v) == 2
             and all(type(n) is int and n > 0 for n in v)]
    return tuple(pairs) if len(pairs) == len(value) else None  # type: ignore[return-value]


_OPTIONAL_NUMBERS = ("ttft_s", "decode_tps", "peak_gpu_mb")


def cache_entry(data: Any) -> tuple[str, GenerationStats, str] | None:
    """A decoded page-cache file -> (raw answer, stats, reasoning), or None unless it is exactly what
    `PageCache.put` writes (an entry from before reasoning was kept has none: "").

    Entries outlive the code that wrote them: a stats field added or dropped since, a hand edit or a cut-off
    copy must cost that one page a re-run, never the whole job (GenerationStats(**stale) raised TypeError).
    """
    if not isinstance(data, dict) or not isinstance(data.get("raw"), str) or not isinstance(data.get("stats"), dict):
        return None
    if not isinstance(data.get("reasoning", ""), str):
        return None
    stats = dict(data["stats"])
    if set(stats) != {f.name for f in dataclass_fields(GenerationStats)}:
        return None
    input_sizes, original_sizes = _sizes(stats["image_input_sizes"]), _sizes(stats["image_original_sizes"])
    if not input_sizes or original_sizes is None:  # the page's layout is mapped through its input size
        return None
    numbers_ok = (all(type(stats[k]) is int and stats[k] >= 0 for k in ("prompt_tokens", "completion_tokens"))
                  and isinstance(stats["total_s"], int | float)
                  and all(stats[k] is None or isinstance(stats[k], int | float) for k in _OPTIONAL_NUMBERS))
    if not numbers_ok or stats["finish_reason"] not in get_args(FinishReason):
        return None
    stats.update(image_input_sizes=input_sizes, image_original_sizes=original_sizes)
    return data["raw"], GenerationStats(**stats), data.get("reasoning", "")


class PageCache:
    """Finished pages on disk, so a long batch can be resumed: a re-run skips pages already done.

    Keyed by the file's content hash and every setting that changes the answer, so an edited file or a new
    setting is parsed afresh rather than served stale.
    """

    def __init__(self, root: Path, session: Backend, options: JobOptions) -> None:
        self.root = root
        self._digests: dict[Path, str] = {}  # one hash per file per job, not one per page lookup
        self.settings = json.dumps({"model": session.model_id, "prompt": options.prompt(), "dpi": options.dpi,
                                    "tokens": options.max_image_tokens, "sampling": options.sampling.as_dict(),
                                    "thinking": [options.thinking, options.thinking_budget]},
                                   sort_keys=True)

    def _key(self, source: str | Path) -> str:
        path = Path(source).resolve()
        if path not in self._digests:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(self.settings.encode())
            self._digests[path] = digest.hexdigest()[:16]
        return self._digests[path]

    def _path(self, source: str | Path, page_number: int) -> Path:
        return self.root / f"{Path(source).stem}-{self._key(source)}" / f"page-{page_number:04d}.json"

    def get(self, source: str | Path, page_number: int) -> tuple[str, GenerationStats, str] | None:
        """The page's (raw answer, stats, reasoning) from an earlier run; None when absent or not usable (the page
        re-runs)."""
        path = self._path(source, page_number)
        if not path.is_file():
            return None
        try:
            entry = cache_entry(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, not JSON, absurdly nested
            log.warning("page cache: ignoring %s (%s: %s)", path, type(exc).__name__, exc)
            return None
        if entry is None:
            log.warning("page cache: ignoring %s (written by another version, or damaged)", path)
        return entry

    def put(self, source: str | Path, result: PageResult) -> None:
        path = self._path(source, result.page_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"raw": result.raw, "stats": asdict(result.stats),
                                  "reasoning": result.reasoning}, ensure_ascii=False),
                       encoding="utf-8")
        tmp.replace(path)  # atomic: an interrupted run never leaves a half-written page behind


def run_job(session: Backend, paths: Sequence[str | Path], options: JobOptions, *,
            cache: PageCache | None = None) -> Iterator[JobProgress]:
    """Parse every page of every file, streaming progress. A bad file is reported and the job goes on;
    closing the iterator (Stop) ends the job and keeps the pages already done. With a cache, pages parsed
    by an earlier run are taken from it instead of the model."""
    if not paths:
        raise UserError("Add at least one PDF or page image.")
    # Count (and so check) every file first: bad files and page limits are reported before any GPU time is
    # spent. Pages are rendered lazily, one at a time, when their turn comes.
    docs: list[tuple[str | Path, int]] = []
    errors: list[str] = []
    for p in paths:
        try:
            docs.append((p, _pages_in(p, options)))
        except UserError as exc:
            errors.append(_named(Path(p).name, exc))
    limits = session.limits
    max_pages = limits.max_pdf_pages if options.max_pages is None else min(options.max_pages, limits.max_pdf_pages)
    total = sum(n for _p, n in docs)
    if total > max_pages:
        raise UserError(f"This job has {total} pages, over the limit of {max_pages} pages per job "
                        "(QVL_MAX_PDF_PAGES). Choose a page range or fewer files.")
    done: list[PageResult] = []
    with tempfile.TemporaryDirectory(prefix="qvl-doc-") as tmp:
        yield JobProgress(tuple(done), total, errors=tuple(errors))
        for path, _n in docs:
            name = Path(path).name
            try:
                # TIFF frames are pages: held to the page-image limit, never to the chat upload limit.
                pages_iter = load_document(path, dpi=options.dpi, pages=options.pages, max_pages=max_pages,
                                           clamp_pages=options.clamp_pages)
                with contextlib.closing(pages_iter):
                    for page in pages_iter:
                        label = f"{name} · page {page.page_number}/{page.n_pages}"
                        cached = cache.get(path, page.page_number) if cache else None
                        if cached is not None:
                            raw, stats, reasoning = cached
                            result = page_result(session, page, options.mode, raw, stats, options.fields,
                                                 reasoning=reasoning)
                            done.append(replace(result, cached=True))
                            yield JobProgress(tuple(done), total, label, "", tuple(errors))
                            continue
                        with contextlib.closing(parse_page(session, page, options, Path(tmp))) as steps:
                            for step in steps:
                                result = step.result
                                if result is None:
                                    yield JobProgress(tuple(done), total, label, step.raw, tuple(errors),
                                                      tokens=step.tokens, reasoning=step.reasoning)
                                else:
                                    done.append(result)
                                    if cache is not None and result.stats.finish_reason != "cancelled":
                                        cache.put(path, result)
                                    yield JobProgress(tuple(done), total, label, "", tuple(errors))
            except (UserError, GenerationError) as exc:
                # One broken file (or page) must not lose the pages already parsed.
                errors.append(_named(name, exc))
                yield JobProgress(tuple(done), total, errors=tuple(errors))
    yield JobProgress(tuple(done), total, errors=tuple(errors), finished=True)


def _named(name: str, exc: Exception) -> str:
    """The error with its file's name in front, unless it already says which file."""
    return str(exc) if name in str(exc) else f"{name}: {exc}"


def _pages_in(path: str | Path, options: JobOptions) -> int:
    from qvl_core.media.documents import count_pages, parse_page_range

    suffix = Path(path).suffix.lower()
    n = count_pages(path) if suffix in (".pdf", ".tif", ".tiff") else 1
    return len(parse_page_range(options.pages, n, clamp=options.clamp_pages))


# ---- whole-job outputs ---------------------------------------------------------------------------------
def job_html(pages: Sequence[PageResult]) -> str:
    """One standalone, sanitized HTML document for the whole job (safe to open in a browser)."""
    sections = []
    for r in pages:
        title = html_lib.escape(r.label)
        sections.append(f'<section class="page"><h6 class="page-label">{title}</h6>\n{r.safe_html}\n</section>')
    return preview_document("\n<hr>\n".join(sections))


def job_markdown(pages: Sequence[PageResult]) -> str:
    parts = [f"<!-- {r.label} -->\n\n{r.markdown.strip()}" for r in pages]
    return "\n\n---\n\n".join(parts) + ("\n" if parts else "")


def job_text(pages: Sequence[PageResult]) -> str:
    return "\n\n\f".join(r.text.strip() for r in pages) + ("\n" if pages else "")


def job_json(pages: Sequence[PageResult]) -> list[dict]:
    return [r.to_json() for r in pages]


def write_job_files(pages: Sequence[PageResult], outdir: Path, stem: str = "document") -> list[Path]:
    """The downloads for a job: .html, .md and .json (layout blocks of every page)."""
    outdir.mkdir(parents=True, exist_ok=True)
    files = {
        outdir / f"{stem}.html": job_html(pages),
        outdir / f"{stem}.md": job_markdown(pages),
        outdir / f"{stem}.json": json.dumps(job_json(pages), indent=2, ensure_ascii=False),
    }
    for path, content in files.items():
        path.write_text(content, encoding="utf-8")
    return list(files)
