"""What recording costs the model: generated fps with and without a Recorder, in one run.

    python -m worldwalk.stream.record_bench [--size 256x144] [--seconds 40] [--period 1]

One session on the reference world, one Recorder attached; recording is switched on and off
every `period` seconds (frames forwarded to `recorder.write` and chunks logged only while on),
so slow changes in the machine's load hit both halves alike. Generated fps = frames / seconds
spent inside `generate_chunk` (the session's own gen_fps definition), summed per half; a chunk
counts for the half it started in. Two players:
- paced: takes frames at the content rate through the FramePacer and forwards each presented
  frame (what `play --record` does);
- flat out: takes frames as fast as the world makes them and records every one (the worst case
  for the encoder competing with the world for the CPU).
The CPU time per frame of the encoder (the Recorder's stats) and of the rest of the process (the
world and its GL threads) are reported too: their ratio is what recording costs when the CPU is
the bottleneck, a figure that, unlike wall-clock fps, other jobs on the machine do not disturb.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .record.recorder import Recorder, RecorderConfig, session_header


class _Timed:
    """A world wrapper that adds up the time spent in generate_chunk, per phase (off, on)."""

    def __init__(self, world: Any, phase: Any) -> None:
        self._world = world
        self._phase = phase
        self.seconds = [0.0, 0.0]
        self.frames = [0, 0]

    def generate_chunk(self, poses: Any, intrinsics: Any) -> Any:
        on = int(self._phase())
        t0 = time.perf_counter()
        chunk = self._world.generate_chunk(poses, intrinsics)
        self.seconds[on] += time.perf_counter() - t0
        self.frames[on] += len(chunk)
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._world, name)


def recording_overhead(
    width: int = 256, height: int = 144, seconds: float = 40.0, period: float = 1.0, paced: bool = True,
    rec_cfg: RecorderConfig | None = None, control: bool = False,
) -> dict[str, float]:
    """Generated fps with recording off and on (reference world, alternating every `period` s).
    `control`: an A/A run, nothing recorded in either half: the noise floor of the comparison."""
    from worldwalk.runtime.pacer import FramePacer
    from worldwalk.runtime.session import Session
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import create_world

    wc = WorldConfig(name="reference", width=width, height=height)
    t_start = time.monotonic()

    def recording() -> bool:
        return int((time.monotonic() - t_start) / period) % 2 == 1

    world = _Timed(create_world(wc), recording)
    session = Session(world)
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(Path(tmp) / "bench.mp4", rec_cfg).start(*session_header(session, wc))
        session.add_listener(
            lambda chunk, state, frames: recording() and not control and rec.log_chunk(chunk, state))

        def player() -> None:
            pacer = FramePacer(session.frames, session.spec.fps)
            while not stop.is_set():
                if paced:
                    frame = pacer.poll(time.monotonic())
                    if frame is None:
                        time.sleep(0.004)  # a 250 Hz display loop
                        continue
                else:
                    frame = session.frames.get(timeout=0.05)
                    if frame is None:
                        continue
                if recording() and not control:
                    rec.write(frame)

        thread = threading.Thread(target=player, daemon=True)
        cpu0 = time.process_time()
        session.inputs.press("w")
        session.start()
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join()
        session.close()
        stats = rec.close()
        cpu = time.process_time() - cpu0  # every thread of this process: world, GL, encoder, player
    off, on = (world.frames[i] / max(world.seconds[i], 1e-9) for i in (0, 1))
    return {
        "gen_fps_without": off,
        "gen_fps_with": on,
        "overhead_pct": 100.0 * (1.0 - on / off),
        "frames_generated_without": world.frames[0],
        "frames_generated_with": world.frames[1],
        "frames_recorded": stats.frames_written,
        "frames_dropped": stats.frames_dropped,
        "encode_cpu_ms_per_frame": 1000.0 * stats.encode_cpu_s / max(stats.frames_written, 1),
        # the rest of the process's CPU per generated frame (the world, its GL threads, the player)
        "world_cpu_ms_per_frame": 1000.0 * (cpu - stats.encode_cpu_s) / max(sum(world.frames), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="256x144")
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--period", type=float, default=1.0)
    p.add_argument("--flat-out", action="store_true", help="also run the flat-out player")
    p.add_argument("--control", action="store_true", help="also run A/A controls (nothing recorded)")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    runs = [(paced, control) for paced in ((True, False) if args.flat_out else (True,))
            for control in ((False, True) if args.control else (False,))]
    for paced, control in runs:
        r = recording_overhead(w, h, args.seconds, args.period, paced, control=control)
        name = ("paced (content rate)" if paced else "flat out") + (" A/A" if control else "")
        print(f"{name:24s} {w}x{h}: gen fps without {r['gen_fps_without']:.1f}, with {r['gen_fps_with']:.1f}"
              f" -> overhead {r['overhead_pct']:+.1f}%  (frames {r['frames_generated_without']} / "
              f"{r['frames_generated_with']}; recorded {r['frames_recorded']}, dropped {r['frames_dropped']}; "
              f"CPU per frame: encoder {r['encode_cpu_ms_per_frame']:.2f} ms, world "
              f"{r['world_cpu_ms_per_frame']:.1f} ms)", flush=True)


if __name__ == "__main__":
    main()
