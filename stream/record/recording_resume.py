"""A recording that goes on in its own files when its walk moves to another process (the cluster's
failover and drain): the same video and session log, one recording, as `serve --record-dir` writes it.

    old = read_recording(video_path, resume_chunk, chunk_records)   # what the old process left
    rec = ContinuedRecorder(video_path, old).start()                  # then write/log_chunk as usual

What the old process left is read back first: the video's frames that reached the file (all of
them after a drain, which closes the recording; up to the last complete fragment after a kill, see
video_encoding.py) and the log's lines. The log is cut to what the video holds: a chunk line of which
the video has only some frames gets `keep`, one of which it has none gets `keep: 0` (the replay
still makes it, to reach the next). Chunks made after the last logged one, up to the boundary the
walk resumes at, are added from `chunk_records` (the cluster's records: index, input, poses) so the
replay reaches that boundary; chunk lines past it of which the video holds nothing are left out,
and so is the old `end` line. Both files are then written afresh beside the old ones (the video's
packets copied, not encoded again) and moved into place, an event {"kind": "moved", "to_chunk": k}
marks the move, and the new process's frames and chunk lines follow. When the old process had
logged chunks past the resumed boundary, the next chunk line goes back to it, which the replay
reads as a rewind: the log replays to the frames the video holds, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .pending_lines import PendingLines
from .recorder import Recorder, RecorderConfig, _open_recorders
from .session_log import SessionLogWriter, read_log


class ResumeError(RuntimeError):
    """The old recording cannot be continued (its files are missing or do not fit together)."""


@dataclass
class OldRecording:
    """What a recording's files held when its walk moved, cut so that the log and the video agree."""

    header: dict[str, Any]
    lines: list[dict[str, Any]]  # chunk and event lines, in order
    packets: list[tuple[bytes, int | None, int | None, bool]]  # the video's (data, pts, dts, keyframe)
    time_base: Fraction  # of the packets' pts/dts
    resume_chunk: int

    @property
    def frames(self) -> int:
        return len(self.packets)


def read_packets(video: Path) -> tuple[list[tuple[bytes, int | None, int | None, bool]], Fraction]:
    """Every complete video packet of a recording (one per frame); a torn tail is left out."""
    import av

    packets: list[tuple[bytes, int | None, int | None, bool]] = []
    with av.open(str(video)) as f:
        stream = f.streams.video[0]
        time_base = Fraction(stream.time_base)
        with contextlib.suppress(av.error.FFmpegError, EOFError):
            for pkt in f.demux(stream):
                if pkt.size == 0:
                    continue  # the demuxer's flush packet
                if pkt.is_corrupt:
                    break  # a fragment the killed process did not finish
                packets.append((bytes(pkt), pkt.pts, pkt.dts, bool(pkt.is_keyframe)))
    return packets, time_base


def annex_b(data: bytes) -> bytes:
    """An H.264 access unit from MP4 (each NAL unit after its 4-byte length) with start codes instead."""
    out, i = bytearray(), 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out += b"\x00\x00\x00\x01" + data[i + 4:i + 4 + n]
        i += 4 + n
    return bytes(out)


def _frames_of(line: dict[str, Any]) -> int:
    return int(line["keep"]) if line.get("keep") is not None else len(line["poses"])


def read_recording(video: str | os.PathLike, resume_chunk: int,
                   chunk_records: dict[int, dict[str, Any]] | None = None) -> OldRecording:
    """Read a recording left by another process and cut it as the module doc says. `chunk_records`:
    index -> {"input", "poses"[, "actions"]} of chunks the walk made, for those its log did not get to."""
    video = Path(video)
    log_path = video.with_suffix(".jsonl")
    if not video.is_file() or not log_path.is_file():
        raise ResumeError(f"{video} or its log {log_path.name} is missing")
    log = read_log(log_path)
    lines = [dict(r) for r in log.records]
    packets, time_base = read_packets(video)
    chunks = [r for r in lines if r["type"] == "chunk"]
    last = int(chunks[-1]["index"]) if chunks else -1
    for k in range(last + 1, resume_chunk):  # made, never logged: the replay must make them too
        rec = (chunk_records or {}).get(k)
        if rec is None:
            raise ResumeError(f"chunk {k} of {video.name} is neither in its log nor in the walk's records")
        line = {"type": "chunk", "index": k, "input": rec.get("input"), "poses": rec["poses"], "keep": 0}
        if rec.get("actions"):  # an action world is steered by these, not by its input
            line["actions"] = rec["actions"]
        lines.append(line)
    remaining = len(packets)
    for line in lines:
        if line["type"] != "chunk":
            continue
        take = min(_frames_of(line), remaining)
        remaining -= take
        line.pop("keep", None)
        if take < len(line["poses"]):
            line["keep"] = take
    packets = packets[: len(packets) - remaining]  # frames no line accounts for (a chunk line lost in the kill)
    while lines and lines[-1]["type"] == "chunk" and lines[-1].get("keep") == 0 \
            and int(lines[-1]["index"]) >= resume_chunk:
        lines.pop()  # made past the boundary the walk resumes at, none of it in the video
    return OldRecording(log.header, lines, packets, time_base, resume_chunk)


class ContinuedRecorder(Recorder):
    """A `Recorder` whose files start with an old recording's frames and lines (see the module doc)."""

    def __init__(self, path: str | os.PathLike, old: OldRecording, cfg: RecorderConfig | None = None) -> None:
        super().__init__(path, cfg)
        self.old = old

    def start(self, header: Any = None, first_image: Any = None) -> ContinuedRecorder:  # noqa: ARG002
        """Write the old frames and lines into fresh files, move them into place, and go on."""
        if self._started:
            raise ResumeError("ContinuedRecorder.start() called twice")
        old, h = self.old, self.old.header
        self.fps = float(h["fps"])
        self.width, self.height = int(h["width"]), int(h["height"])
        self._queue = self._frame_queue()
        final = self._final = self.path
        self._moving = final.with_name(f"{final.stem}.moving{final.suffix}")
        self.path = self._moving
        try:
            self._open_container()  # here: a bad path or codec fails in the caller
        finally:
            self.path = final
        assert self.log_path is not None
        log_moving = self.log_path.with_suffix(".moving.jsonl")
        self._log = SessionLogWriter(log_moving)
        self._lines = PendingLines(self._log)
        self._log.write_copied(h, old.lines)
        self._log.write_event("moved", to_chunk=old.resume_chunk, frames=old.frames)
        os.replace(log_moving, self.log_path)  # the writer keeps its open file: the name moves, not the data
        self._log.path = self.log_path
        self.frames_written = old.frames
        # the old video is copied on the encode thread, before the new frames (they wait in the
        # queue), so a long recording does not hold up the walk's start
        self._thread = threading.Thread(target=self._copy_then_encode, name="recorder-encode", daemon=True)
        self._started = True
        self._thread.start()
        _open_recorders.add(self)
        return self

    def _copy_then_encode(self) -> None:
        try:
            self._copy(self.old)
            os.replace(self._moving, self._final)  # the container keeps its open file
        except Exception as e:  # noqa: BLE001 - the recording stops (error), the walk goes on
            self.error = e
        self._encode_loop()

    def _copy(self, old: OldRecording) -> None:
        """The old video's packets, as they are, into the new container; new frames follow the last."""
        import av

        last = -1
        for data, pts, dts, key in old.packets:
            # H.264 read back from MP4 is length-prefixed; the muxer takes libx264's start codes
            pkt = av.Packet(annex_b(data) if self.encoder == "libx264" else data)
            pkt.pts, pkt.dts, pkt.time_base, pkt.is_keyframe = pts, dts, old.time_base, key
            pkt.stream = self._stream
            self._container.mux(pkt)
            if pts is not None:
                last = max(last, round(pts * old.time_base / self._time_base))
        self._last_pts = last  # the first new frame goes one frame after it (VideoEncoding._pts)
