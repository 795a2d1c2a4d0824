"""The PyAV (FFmpeg) reader: exact frame times from the packets, keyframe seeks, parallel decoders."""
from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from qvl_core.errors import UserError
from qvl_core.media.video.readers import _Failed, _not_a_video

# PyAV: a run of unneeded packets longer than this is skipped by seeking instead of reading through.
SEEK_MIN_GAP_PACKETS = 500
# PyAV: independent decoders, one per core (each on its own keyframe-aligned part of the video). Frame
# threads inside one decoder stall at every seek; separate decoders do not. Each one holds its reference
# frames (about 200 MB for 4K), hence the cap.
MAX_DECODE_THREADS = 8
MIN_PACKETS_PER_CHUNK = 200
CHUNKS_PER_DECODER = 4
# PyAV: 8-bit 4:2:0 frames are scaled as YUV and then converted (see _PyAVReader._rgb).
_PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})


class _PyAVReader:
    """FFmpeg through PyAV: exact presentation times from the packets, keyframe seeks, skipped non-reference frames."""

    name = "pyav"
    module = "av"

    def __init__(self, path: str, *, emit: Callable[[tuple], None], index: bool = True,
                 max_duration: float | None = None) -> None:
        import av

        self.path, self.emit = path, emit
        self._scalers = threading.local()
        name = Path(path).name
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise _not_a_video(path, exc.strerror or type(exc).__name__) from None
        try:
            self._open_stream(name, index, max_duration)
        except BaseException:
            self.container.close()
            raise

    def _open_stream(self, name: str, index: bool, max_duration: float | None) -> None:
        import av

        container = self.container
        if not container.streams.video:
            if container.streams.audio:
                raise UserError(f"File {name!r} has no video stream: it holds only audio.")
            raise UserError(f"File {name!r} is not a video: it has no video stream.")
        self.stream = stream = container.streams.video[0]
        cc = stream.codec_context
        if cc is None or not getattr(cc, "name", None):  # FFmpeg has no decoder for it
            raise _Failed(f"video {name!r} uses a video codec this app cannot decode")
        cc.thread_type = "AUTO"  # frame and slice threads: every core on one video
        cc.thread_count = 0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        declared = (float(stream.duration * stream.time_base) if stream.duration
                    else container.duration / 1e6 if container.duration else 0.0)
        if max_duration is not None and declared > max_duration:
            raise UserError(f"Video {name!r} lasts {declared:.0f} s, over the limit of {max_duration:.0f} s "
                            f"(QVL_MAX_VIDEO_SECONDS); choose a shorter clip with start/end.")
        if index:
            self._index(name, declared)
            self.fps = float(rate) if rate else (self.frames - 1) / max(self.frame_times[-1], 1e-9)
            try:
                self.container.seek(self.dts[0], stream=stream, backward=True)
            except av.error.FFmpegError as exc:  # e.g. a damaged still image: FFmpeg says "Operation not permitted"
                raise _not_a_video(self.path, f"it cannot be read from its start: {exc.strerror}") from None
        first = self._first_frame(name)
        self.rotation = (-int(getattr(first, "rotation", 0) or 0)) % 360
        w, h = first.width, first.height
        self.width, self.height = (h, w) if self.rotation in (90, 270) else (w, h)
        if not index:
            self.fps = float(rate) if rate else 0.0
            self.duration = declared or (stream.frames / self.fps if self.fps and stream.frames else 0.0)
            self.frames = stream.frames or max(1, round(self.duration * self.fps))
            self.frame_times = np.arange(self.frames) / self.fps if self.fps else np.zeros(1)

    def _first_frame(self, name: str) -> Any:
        import av

        try:
            for frame in self.container.decode(self.stream):
                return frame
        except av.error.FFmpegError as exc:
            raise _Failed(f"video {name!r} is damaged or truncated: it could not be decoded ({exc.strerror})") from None
        raise UserError(f"Video {name!r} has no frames.")

    def _index(self, name: str, declared: float) -> None:
        """One pass over the packets (no decoding): every frame's time, keyframes, decode order."""
        import av

        pts: list[int] = []
        dts: list[int] = []
        key: list[bool] = []
        shown: list[bool] = []
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    raise _Failed(f"video {name!r} has frames without timestamps")
                pts.append(packet.pts)
                dts.append(packet.dts if packet.dts is not None else packet.pts)
                key.append(packet.is_keyframe)
                shown.append(not packet.is_discard)
                if len(pts) % 8192 == 0:
                    self.emit(("progress", len(pts)))
        except av.error.FFmpegError:
            pass  # a damaged tail: the length check below decides whether what was read is enough
        if not pts:
            raise UserError(f"Video {name!r} has no frames.")
        self.pts, self.dts, self.key = pts, dts, key
        self.pos_of = {p: i for i, p in enumerate(pts)}
        self._gop_starts = [i for i, k in enumerate(key) if k or i == 0]
        self._seeks_by_pts = bool({"mov", "mp4", "matroska", "webm"} & set(self.container.format.name.split(",")))
        display = sorted(p for p, s in zip(pts, shown, strict=True) if s)
        if len(set(display)) != len(display):
            raise _Failed(f"video {name!r} has frames with duplicate timestamps")
        self.display_pts = display
        tb = self.stream.time_base
        # Exact integer ticks times the numerator, then one correctly rounded division: the same floats as
        # float(Fraction) per frame, without an hour of video costing a second in Fraction arithmetic.
        if (display[-1] - display[0]) * tb.numerator < 2**53:  # exact in float64 (always, but for odd files)
            ticks = (np.asarray(display, np.int64) - display[0]) * tb.numerator
            self.frame_times = ticks.astype(np.float64) / tb.denominator
        else:
            self.frame_times = np.asarray([float((p - display[0]) * tb) for p in display])
        self.frames = len(display)
        # The last frame lasts as long as the one before it (or one frame at the nominal rate).
        if self.frames > 1:
            step = Fraction(display[-1] - display[-2]) * tb
        else:
            rate = self.stream.average_rate or self.stream.guessed_rate
            step = 1 / Fraction(rate) if rate else Fraction(1, 25)
        self.duration = float((display[-1] - display[0]) * tb + step)
        if declared and self.duration < 0.9 * declared - 1.0:
            raise UserError(f"Video {name!r} is truncated or damaged: it declares {declared:.1f} s but only "
                            f"the first {self.duration:.1f} s can be read.")

    def read(self, targets: list[tuple[int, float]], size: tuple[int, int] | None):
        want = {self.display_pts[i]: j for j, (i, _t) in enumerate(targets)}
        gop_start = self._gop_starts
        # For each GOP with a wanted frame: the last packet (decode order) that must be decoded.
        last_needed: dict[int, int] = {}
        glued: set[int] = set()  # GOPs whose leading pictures need the GOP before, decoded in one go
        for p in want:
            i = self.pos_of[p]
            g = bisect.bisect_right(gop_start, i) - 1
            last_needed[g] = max(last_needed.get(g, -1), i)
            if g > 0 and p < self.pts[gop_start[g]]:  # open-GOP leading picture: refers to the GOP before
                last_needed[g - 1] = gop_start[g] - 1
                glued.add(g)
        gops = [(g, gop_start[g], last_needed[g]) for g in sorted(last_needed)]
        threads = _decode_threads()
        # More pieces than decoders: whoever finishes first takes the next, so no core idles at the end.
        chunks = _split_work(gops, glued, threads * CHUNKS_PER_DECODER)
        if len(chunks) == 1 or threads == 1:
            yield from self._decode(self.container, self.stream, gops, want, size, self.emit)
        else:
            yield from self._decode_parallel(chunks, min(threads, len(chunks)), want, size)

    def _decode(self, container: Any, stream: Any, gops: list[tuple[int, int, int]], want: dict[int, int],
                size: tuple[int, int] | None, emit: Callable[[tuple], None]):
        """Decode the wanted frames of `gops` [(gop, first packet, last needed packet)]: seek to each run of
        GOPs, send every packet up to the last wanted one (non-reference frames skipped), drain."""
        import av

        firsts = {first for _g, first, _last in gops}
        pending = {p: j for p, j in want.items() if self._gop_start_at(self.pos_of[p]) in firsts}
        cc = stream.codec_context
        packets = None
        cursor = -1  # decode position of the last packet taken from the demuxer
        for _g, first, last in gops:
            if packets is None or first - cursor > SEEK_MIN_GAP_PACKETS or first <= cursor:
                if packets is not None:
                    yield from self._frames(cc.decode(None), pending, size)  # drain before the seek flushes
                container.seek(self._seek_target(first), stream=stream, backward=True)
                packets = container.demux(stream)
                cursor = -1
            for packet in packets:
                if packet.size == 0:
                    continue
                i = self.pos_of.get(packet.pts, -1)
                if cursor == -1 and i > first:  # the seek overshot: start over from the top of the file
                    container.seek(self.dts[0], stream=stream, backward=True)
                    packets = container.demux(stream)
                    cursor = -2
                    continue
                cursor = max(cursor, i)
                if i % 512 == 0:
                    emit(("progress", i))
                if i < first:
                    continue
                cc.skip_frame = "DEFAULT" if packet.pts in pending or i == first else "NONREF"
                try:
                    frames = cc.decode(packet)
                except av.error.FFmpegError:
                    frames = []  # a damaged packet: if a wanted frame is lost, the check below says so
                yield from self._frames(frames, pending, size)
                if i >= last:
                    break
        if packets is not None:
            yield from self._frames(cc.decode(None), pending, size)
        if pending:
            missing = sorted(float((p - self.display_pts[0]) * self.stream.time_base) for p in pending)
            raise _Failed(f"the frames of {Path(self.path).name!r} at {', '.join(f'{t:.2f}' for t in missing[:3])} s "
                          "could not be decoded")

    def _seek_target(self, first: int) -> int:
        """The timestamp to seek to so as to land on the keyframe at decode position `first`.

        MP4/MOV and Matroska seek by presentation time; with B-frames a keyframe is shown after it is
        decoded, so its decode time lands a whole GOP early (correct, since we read forward, but a GOP
        demuxed for nothing per seek). Other demuxers (MPEG-TS, AVI) seek by decode time, where the
        presentation time would overshoot. The time is kept below the next keyframe's decode time.
        """
        if not self._seeks_by_pts:
            return self.dts[first]
        g = bisect.bisect_right(self._gop_starts, first)
        limit = self.dts[self._gop_starts[g]] - 1 if g < len(self._gop_starts) else self.pts[first]
        return max(self.dts[first], min(self.pts[first], limit))

    def _gop_start_at(self, pos: int) -> int:
        return self._gop_starts[bisect.bisect_right(self._gop_starts, pos) - 1]

    def _decode_parallel(self, chunks: list[list[tuple[int, int, int]]], threads: int, want: dict[int, int],
                         size: tuple[int, int] | None):
        """`threads` decoders, each on its own thread (PyAV decodes without the GIL), taking chunks in turn."""
        import queue

        import av

        results: queue.SimpleQueue = queue.SimpleQueue()
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for chunk in chunks:
            todo.put(chunk)
        stop = threading.Event()

        def work() -> None:
            try:
                with av.open(self.path, metadata_errors="ignore") as container:
                    stream = container.streams.video[0]
                    stream.codec_context.thread_type = "AUTO"
                    stream.codec_context.thread_count = max(1, _cpu_count() // threads)
                    while not stop.is_set():
                        try:
                            chunk = todo.get_nowait()
                        except queue.Empty:
                            return
                        for item in self._decode(container, stream, chunk, want, size, lambda msg: None):
                            results.put(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, which raises it
                results.put(exc)
            finally:
                results.put(None)

        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for t in workers:
            t.start()
        running = len(workers)
        try:
            while running:
                try:
                    item = results.get(timeout=1.0)
                except queue.Empty:
                    self.emit(("progress", running))
                    continue
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()

    def _frames(self, frames: list, pending: dict[int, int], size: tuple[int, int] | None):
        for frame in frames:
            j = pending.pop(frame.pts, None)
            if j is None:
                continue
            index = bisect.bisect_left(self.display_pts, frame.pts)
            yield j, index, float(self.frame_times[index]), self._rgb(frame, size)

    def _rgb(self, frame: Any, size: tuple[int, int] | None) -> np.ndarray:
        turn = self.rotation // 90
        # One pair of scalers per decoding thread, kept across frames, each single-threaded: frame.reformat
        # would build a new swscale context (and its thread pool) for every frame, which cost more CPU
        # than the conversion itself; the decoders already keep every core busy.
        scalers = getattr(self._scalers, "pair", None)
        if scalers is None:
            from av.video.reformatter import VideoReformatter

            scalers = self._scalers.pair = (VideoReformatter(), VideoReformatter())
        scale, convert = scalers
        if size is not None:
            h, w = size if turn % 2 == 0 else size[::-1]  # resize in the stored orientation, then turn
            if frame.format.name in _PLANAR_420:
                # Scale the YUV planes first, then convert at the small size: swscale's unscaled
                # yuv->rgb path is several times faster than its scaling one.
                frame = scale.reformat(frame, width=w, height=h, interpolation="BILINEAR", threads=1)
            else:
                frame = scale.reformat(frame, width=w, height=h, format="rgb24", interpolation="BILINEAR",
                                       threads=1)
        arr = convert.reformat(frame, format="rgb24", threads=1).to_ndarray()
        return np.ascontiguousarray(np.rot90(arr, -turn)) if turn else arr

    def close(self) -> None:
        self.container.close()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _decode_threads() -> int:
    return max(1, min(MAX_DECODE_THREADS, _cpu_count()))


def _split_work(gops: list[tuple[int, int, int]], glued: set[int], parts: int) -> list[list[tuple[int, int, int]]]:
    """Cut the GOPs to decode into up to `parts` contiguous runs of about equal work (packets to decode).

    Small jobs stay in one piece: a decoder per core only pays off once each has a few GOPs of work.
    """
    work = [last - first + 1 for _g, first, last in gops]
    total = sum(work)
    parts = max(1, min(parts, len(gops), total // MIN_PACKETS_PER_CHUNK))
    chunks: list[list[tuple[int, int, int]]] = [[]]
    done = 0
    for gop, w in zip(gops, work, strict=True):
        if chunks[-1] and done >= total * len(chunks) / parts and gop[0] not in glued:
            chunks.append([])
        chunks[-1].append(gop)
        done += w
    return chunks
