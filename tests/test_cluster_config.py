"""The cluster's pieces that need no running Ray cluster: a walk resumed from a chunk boundary in
another session equals the uninterrupted walk, the Serve config file builds the app, and bad
cluster settings are named. (The cluster itself: tests/test_cluster.py, marked `cluster`.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from worldwalk.runtime.session import Boundary, Session, SessionConfig
from worldwalk.runtime.worlds import create_world

from .builders import reference_config

WORLD = reference_config(width=64, height=36, fps=16.0)


def frames_of(session: Session, count: int, timeout: float = 30.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {len(out)} of {count} frames came"
        frame = session.frames.get(timeout=0.1)
        if frame is not None:
            out.append(frame)
    return out


def test_a_resumed_walk_equals_the_uninterrupted_one():
    cfg = SessionConfig(just_in_time=False)
    kept: list[Boundary] = []
    a = Session(create_world(WORLD), cfg)
    a.add_boundary_listener(kept.append)
    a.inputs.press("w")
    a.inputs.press("e")  # walk and turn: position, yaw and velocity all carry state
    with a.start():
        walk = frames_of(a, 40)
    b0 = next(b for b in kept if b.chunk_index == 5)
    assert b0.frame_index > 0 and b0.integrator.velocity != (0.0, 0.0, 0.0)

    b = Session(create_world(WORLD), cfg, resume=b0)
    b.inputs.press("w")
    b.inputs.press("e")
    with b.start():
        resumed = frames_of(b, 12)
    assert resumed[0].index == b0.frame_index and resumed[0].chunk_index == 5
    expected = {f.index: f for f in walk}
    for f in resumed:
        assert np.array_equal(f.pose, expected[f.index].pose), f"frame {f.index}: the pose did not carry on"
        assert np.array_equal(f.image, expected[f.index].image), f"frame {f.index} differs"


def test_a_handed_off_walk_stops_at_a_boundary_and_goes_on_from_it_without_a_gap():
    """The drain: `hand_off` stops the model thread at the next boundary (after its listeners ran);
    the frames queued before it are still shown, and a session resumed from it carries on at the
    very next frame, equal to the uninterrupted walk's."""
    cfg = SessionConfig(just_in_time=False, queue_capacity=6)
    kept: list[Boundary] = []
    ref = Session(create_world(WORLD), cfg)
    ref.inputs.press("w")
    with ref.start():
        walk = {f.index: f for f in frames_of(ref, 60)}
    a = Session(create_world(WORLD), cfg)
    a.add_boundary_listener(kept.append)
    a.inputs.press("w")
    with a.start():
        before = frames_of(a, 20)
        a.hand_off()
        assert a.handed_off.wait(10), "the model thread did not stop at a boundary"
        before += frames_of(a, len(a.frames))  # what was queued is still shown
        time.sleep(0.1)
        assert a.frames.get(timeout=0.1) is None  # nothing after the boundary
    b0 = kept[-1]
    assert before[-1].index == b0.frame_index - 1 and before[-1].chunk_index == b0.chunk_index - 1
    b = Session(create_world(WORLD), cfg, resume=b0)
    b.inputs.press("w")
    with b.start():
        after = frames_of(b, 8)
    assert after[0].index == before[-1].index + 1
    for f in before + after:
        assert np.array_equal(f.image, walk[f.index].image), f"frame {f.index} differs from the uninterrupted walk"


def need_ray() -> None:
    pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")


def test_the_serve_config_file_names_real_flags_and_builds():
    need_ray()
    import yaml

    from worldwalk.stream import cluster_deploy as deploy

    doc = yaml.safe_load((Path(deploy.__file__).parent / "cluster" / "serve_config.yaml").read_text())
    spec = doc["applications"][0]
    module, name = spec["import_path"].split(":")
    assert module == deploy.__name__ and callable(getattr(deploy, name))
    flags = spec["args"]["flags"].replace("--world sana-wm --checkpoint /models/sana-wm", "--world reference")
    built = deploy.app_builder({"flags": flags})
    hosts = built._bound_deployment.init_args[0]._bound_deployment  # the gateway's SessionHost handle
    assert hosts.num_replicas == 2 and hosts.ray_actor_options["num_gpus"] == 1
    assert hosts.max_ongoing_requests == 1  # one session per replica: a slot per session


def test_the_router_never_picks_a_draining_session_host():
    need_ray()
    import asyncio
    from types import SimpleNamespace

    from worldwalk.stream.cluster.config import ClusterConfig
    from worldwalk.stream.cluster.routing import AvoidDraining

    replicas = [SimpleNamespace(name=n, routing_stats={"draining": n == "b"}) for n in "abc"]
    for _ in range(20):  # two at random, as Serve's own router, never the draining one
        (picked,) = asyncio.run(AvoidDraining.choose_replicas(None, replicas))  # type: ignore[arg-type]
        assert len(picked) == 2 and "b" not in {r.name for r in picked}
    assert asyncio.run(AvoidDraining.choose_replicas(None, replicas[1:2])) == []  # type: ignore[arg-type]
    assert ClusterConfig().host_options()["request_router_config"].request_routing_stats_period_s <= 1.0


def test_bad_cluster_settings_are_named():
    need_ray()
    from worldwalk.stream import cluster_deploy as deploy
    from worldwalk.stream.cluster.config import ClusterConfig

    with pytest.raises(ValueError, match="--token"):
        deploy.app_builder({"flags": "--world reference --host 0.0.0.0"})
    with pytest.raises(ValueError, match="both --min-replicas and --max-replicas"):
        ClusterConfig(min_replicas=1)
    with pytest.raises(ValueError, match="sessions_per_replica"):
        ClusterConfig(sessions_per_replica=0)
    auto = ClusterConfig(min_replicas=1, max_replicas=3)
    assert auto.admission_wait is None and auto.host_options()["autoscaling_config"]["max_replicas"] == 3
