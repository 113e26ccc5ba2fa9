"""A player's session from its start to its end: `PlayerStart` says how a walk begins, `PlayerSessions`
builds, lists and ends the sessions of one server.

A start is one value, given to the server's public entry (`StreamServer.handle(ws, start)`) and passed
on to the session factory: where the walk begins (the first frame, or a chunk boundary it resumes
at, with the keys held there), where its recording goes (new files, or on in the walk's files from
that chunk: `RecordingPlan`), and who is told of the session before it starts (`on_session`: the
cluster's session hosts ship its boundaries to the snapshot store). `worldwalk serve` starts every
player with `PlayerStart()`.

    play = await server.players.open(slot, start, progress)  # world built off the loop, recording attached, started
    ...                                                       # play.fanout sends its frames
    await server.players.end(play)                            # world closed off the loop, then the slot given back

A session is listed in `running` from its start until its world is closed, and holds its admission
slot as long; a recording never fails a walk.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from worldwalk.controls import PoseIntegrator
from worldwalk.runtime.heap import release_free_heap
from worldwalk.runtime.progress import Progress, listening
from worldwalk.runtime.session import Boundary, Session
from worldwalk.runtime.worlds.world_pool import WorldPool

from ..record.session_recording import RecordingPlan, SessionRecording
from .admission import SessionSlot
from .config import ServeConfig
from .guest import PlaySession
from .video_track import FrameFanout

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PlayerStart:
    """How one player's walk begins (see the module docstring)."""

    resume: Boundary | None = None  # the chunk boundary the walk goes on from; None: the first frame
    held_keys: tuple[str, ...] = ()  # keys held at that boundary: the walk goes on with them
    recording: RecordingPlan = field(default_factory=RecordingPlan)  # with --record-dir
    # called with the session on the build's worker thread, before it starts (so no chunk is missed)
    on_session: Callable[[Session], None] | None = None


SessionFactory = Callable[[PlayerStart], Session]


class PlayerSessions:
    """The players' sessions of one server: built from a `PlayerStart`, listed while they run, ended."""

    def __init__(self, cfg: ServeConfig, worlds: WorldPool, factory: SessionFactory | None = None,
                 note_recording_failure: Callable[[str, str], None] | None = None) -> None:
        self.cfg = cfg
        self.worlds = worlds  # one model for every session (runtime/worlds/world_pool.py)
        self.running: dict[str, PlaySession] = {}  # by session id, until the world is closed
        self.opened = 0
        self.closed = 0
        self._factory = factory or self.default_session
        self._note_recording_failure = note_recording_failure
        self._prompt_noted = False  # "--prompt is ignored" said once

    def default_session(self, start: PlayerStart) -> Session:
        """`worldwalk serve`'s session: the server's world and controls, from where `start` says."""
        world = self.worlds.session_world()
        if not self._prompt_noted and (note := world.spec.prompt_ignored(self.cfg.session.prompt)):
            self._prompt_noted = True
            log.warning("serve: %s", note)  # once: every session of this server would say the same
        integrator = PoseIntegrator(self.cfg.controls, self.cfg.bindings)
        session = Session(world, self.cfg.session, integrator=integrator, resume=start.resume)
        if start.held_keys:
            session.inputs.set_keys(start.held_keys)
        return session

    async def open(self, slot: SessionSlot, start: PlayerStart,
                   progress: Callable[[Progress], None] | None = None) -> PlaySession:
        """Build and start a player's session on a worker thread (`progress` hears of a slow graph build)
        and list it. The slot is the session's from here: given back when its world is closed, or at
        once when the build fails. A cancelled wait does not orphan the world still being built."""
        building = asyncio.get_running_loop().run_in_executor(None, self.build, start, progress)
        try:
            play = await asyncio.shield(building)
        except BaseException:
            # the slot stays held until the world that is still loading has been closed
            building.add_done_callback(lambda fut: _close_unclaimed(slot, fut))
            raise
        play.slot = slot
        self.running[play.id] = play
        self.opened += 1
        return play

    def build(self, start: PlayerStart, progress: Callable[[Progress], None] | None = None) -> PlaySession:
        """Runs on a worker thread: load the world (telling `progress` of a slow graph build), start its
        session (and its recording, whose files open with the first frame sent; a recording that fails
        never fails the session)."""
        with listening(progress):
            session = self._factory(start)
        sid = secrets.token_urlsafe(6)
        recording = None
        try:
            if start.on_session is not None:
                start.on_session(session)
            if self.cfg.record_dir:
                recording = self._recording(session, sid, start.recording)
            session.start()
        except BaseException:
            session.close()
            if recording is not None:
                close_recording(recording)
            raise
        fanout = FrameFanout(session.frames, session.spec.fps, self.cfg.fanout)
        if recording is not None:
            fanout.on_frame = recording.write
        return PlaySession(id=sid, session=session, fanout=fanout, recorder=recording)

    def _recording(self, session: Session, sid: str, plan: RecordingPlan) -> SessionRecording | None:
        """What the player sees (frames from the fan-out) and the session log beside it, as `plan` says;
        attached before session.start() so the log misses no chunk."""
        assert self.cfg.record_dir is not None
        try:
            return SessionRecording(session, self.cfg.record_dir, f"session-{sid}", world_cfg=self.cfg.world,
                                    recorder_cfg=self.cfg.recorder, on_failure=self._recording_failed, plan=plan)
        except Exception as e:  # noqa: BLE001 - no recording, but the walk goes on
            self._recording_failed("not recording: the recording could not be set up", e)
            return None

    def _recording_failed(self, status: str, error: BaseException) -> None:
        if self._note_recording_failure is not None:
            self._note_recording_failure(status, f"{type(error).__name__}: {error}"[:300])

    async def end(self, play: PlaySession) -> None:
        """Free a session. It stays in `running` (and holds its slot) until its world is closed."""
        if play.ending or play.id not in self.running:
            return
        play.ending = True
        for spectator in list(play.spectators):
            spectator.end("session_closed")
        await play.fanout.close()
        try:
            await off_loop(_close_play, play)
        finally:
            self.running.pop(play.id, None)
            if play.slot is not None:
                play.slot.release()  # the world is gone: its place may be given again
        self.closed += 1


async def off_loop(action: Callable[[T], object], subject: T) -> None:
    """`action(subject)` on the loop's default executor, the pool's thread holding `subject` only for the
    call. A pool thread keeps its work item (the callable and its arguments) a moment after the await has
    returned: a session closed as `run_in_executor(None, session.close)` would outlive its end by that
    moment, and with it its world."""
    box = [subject]
    del subject
    await asyncio.get_running_loop().run_in_executor(None, _call_popped, action, box)


def _call_popped(action: Callable[[T], object], box: list[T]) -> None:
    action(box.pop())


def _close_play(play: PlaySession) -> None:
    """On a worker thread (closing waits for the model thread's chunk to end): close the session, its world
    with it, then finalize its recording."""
    play.session.close()
    if play.recorder is not None:
        close_recording(play.recorder)


def close_recording(recording: SessionRecording) -> None:
    """Finalize a recording; a failure is logged with the file's name, never lost silently."""
    try:
        recording.close()
    except Exception:
        log.exception("finalizing the recording %s failed", getattr(recording, "path", "?"))


def _close_unclaimed(slot: SessionSlot, fut: asyncio.Future) -> None:
    """A session built for a browser that left before it was ready: free it, off the event loop
    (closing waits for the model thread's chunk to end), then give its slot back."""
    if fut.cancelled() or fut.exception() is not None:
        slot.release()
        return
    box = [fut.result()]  # the pool's thread holds the session only while it closes it (see off_loop)

    def close() -> None:
        try:
            _call_popped(_close_play, box)
            release_free_heap()
        finally:
            slot.release()

    asyncio.get_running_loop().run_in_executor(None, close)
