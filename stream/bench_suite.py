"""`worldwalk bench` suites for what leaves the process: the WebRTC encode path and recording.

- streaming: per-frame cost of aiortc's encoders (H.264 and VP8, encode + RTP packetization),
  fed real reference-world frames, as the video track does for every frame it sends.
- recording: generated fps with recording off and on within one session (alternating halves,
  so load changes hit both alike), plus the encoder's CPU time per frame, which other jobs on
  the machine do not disturb.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import numpy as np


def _reference_frames(width: int, height: int, count: int) -> np.ndarray:
    from worldwalk.controls import InputState, PoseIntegrator, intrinsics_from_fov
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import create_world

    world = create_world(WorldConfig(name="reference", width=width, height=height))
    try:
        world.reset(None, None, 0)
        poses = PoseIntegrator().plan(InputState(keys=frozenset({"w", "e"})), count, 1 / 16)
        K = np.broadcast_to(intrinsics_from_fov(width, height), (count, 3, 3))
        return world.render_many(poses, K.copy())
    finally:
        world.close()


def streaming(ctx: Any) -> None:
    import av
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    width, height = 256, 144
    count = 48 if ctx.quick else 160
    frames = _reference_frames(width, height, count)
    codecs = {
        "H.264": RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                                       parameters={"packetization-mode": "1", "level-asymmetry-allowed": "1",
                                                   "profile-level-id": "42e01f"}),
        "VP8": RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96),
    }
    for name, params in codecs.items():
        encoder = get_encoder(params)
        times, nbytes = [], 0
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i * 5625, Fraction(1, 90000)  # 16 fps on the 90 kHz clock
            t0 = time.perf_counter()
            payloads, _ = encoder.encode(frame, force_keyframe=(i == 0))
            times.append(time.perf_counter() - t0)
            nbytes += sum(len(p) for p in payloads)
        times = times[8:]  # warm-up: the first frames include encoder setup and a keyframe
        ctx.add_timings(f"{name} encode+packetize per frame ({width}x{height})", times,
                        "aiortc encoder on the server, RGB->YUV included")
        ctx.add(f"{name} bitrate at 16 fps", nbytes * 8 * 16 / len(frames) / 1000, "kbit/s", "walking forward")


def recording(ctx: Any) -> None:
    from .record_bench import recording_overhead

    seconds = 6.0 if ctx.quick else 40.0
    r = recording_overhead(256, 144, seconds=seconds, period=1.0, paced=False)
    note = f"reference world 256x144, flat out, recording toggled every 1 s over {seconds:.0f} s"
    ctx.add("generated fps, recording off", r["gen_fps_without"], "frames/s", note)
    ctx.add("generated fps, recording on", r["gen_fps_with"], "frames/s", note)
    ctx.add("recording overhead (wall clock)", r["overhead_pct"], "%", "1 - on/off; noisy on a busy machine")
    ctx.add("encoder CPU per frame", r["encode_cpu_ms_per_frame"], "ms", "libx264 ultrafast, its own thread")
    ctx.add("world CPU per frame", r["world_cpu_ms_per_frame"], "ms", "render + readback + session, for scale")
    ctx.add("recording overhead (CPU)", 100 * r["encode_cpu_ms_per_frame"] / r["world_cpu_ms_per_frame"], "%",
            "encoder CPU / world CPU: the cost when the CPU is the bottleneck")
    ctx.add("frames dropped by the recorder", r["frames_dropped"], "frames", "")


def browser(ctx: Any) -> None:
    """Server -> browser latency with a real headless Chromium in a loopback-only namespace.

    Runs the browser walk (stream/browser_bench.py, which the browser tests run too), so it needs
    playwright, Chromium and root for the namespace; elsewhere it says what is missing.
    """
    import importlib.util
    import json

    from .loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

    if ctx.quick:
        ctx.skip("browser latency", "not in --quick (a browser run takes about a minute)")
        return
    if importlib.util.find_spec("playwright") is None:
        ctx.skip("browser latency", "needs playwright (pip install playwright)")
        return
    why = netns_unavailable_reason()
    if why is not None:
        ctx.skip("browser latency", why)
        return
    proc = run_module_in_loopback_netns("worldwalk.stream.browser_bench", ["walk"], timeout=300,
                                        env={"MALLOC_ARENA_MAX": "2"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"browser harness failed: {proc.stderr[-500:]}")
    walk = json.loads(lines[-1])["walk"]
    if "error" in walk:
        raise RuntimeError(walk["error"][-500:])
    note = f"headless Chromium, {walk['codec']}, 256x144 reference world at 20 fps, loopback"
    ctx.add("frame created -> browser frame callback p50", walk["latency_frame_ms"]["median"], "ms",
            note + "; includes the session queue")
    key = walk["latency_key_ms"]
    if key.get("to_generated_ms") is not None:
        ctx.add("browser key press -> frame generated with it", key["to_generated_ms"], "ms", note)
    if key.get("to_shown_ms") is not None:
        ctx.add("browser key press -> that frame shown", key["to_shown_ms"], "ms", note)
    split = key.get("split")
    if split:  # the page's own measure of the press, step by step (stream/webrtc/web/client.js keyLatency)
        steps = {"in": "key message to the server (half the ping)", "wait": "until the next chunk is planned",
                 "plan": "planning to the model", "generate": "the world makes the chunk",
                 "decode": "the world's VAE decode", "queue": "queue, until released at the content rate",
                 "out": "encode + network (released -> last packet here)", "paint": "the page's decode + paint"}
        for step, what in steps.items():
            ctx.add(f"browser key -> presented: {step}", split[step], "ms", what)


def session_memory(ctx: Any) -> None:
    """The server's RSS over real WebRTC sessions one after another, the garbage collector off: what a
    closed session leaves behind (`session_memory_bench.py`)."""
    import asyncio

    from worldwalk.runtime.world import default_world_name

    from .session_memory_bench import bench_config, sessions_rss

    world = default_world_name()
    n = 6 if ctx.quick else 30
    rss = asyncio.run(sessions_rss(bench_config(world), n))
    note = f"{world} world, {n} sessions one after another, each receiving 3 frames; gc disabled"
    ctx.add("RSS after the first session", rss[0], "MiB", note)
    ctx.add(f"RSS after session {n}, change from the first", rss[-1] - rss[0], "MiB", note)
    ctx.add("largest RSS change from the first", max(rss) - rss[0], "MiB", note)
