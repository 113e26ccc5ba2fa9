"""The cluster runs the single-process server through its public API only, read from the source with ast:
no class of `stream/cluster/` extends `StreamServer` (to override its steps), none reaches a private
name (`_x`) of a server object, and no map is keyed by an object's `id()` (state smuggled past the
server keyed by its session). How a walk begins is one `PlayerStart` given to `StreamServer.handle`.

The checker also runs on the old session host's way of doing it, so it is seen to fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[1] / "stream" / "cluster"
SERVER_CLASSES = {"StreamServer"}


def _dotted(node: ast.AST) -> str:
    """`self.server.x` -> "self.server.x" (the parts that are names and attributes)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def server_privacy_violations(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    servers = {"server"}  # what holds a server: self.server, server, and whatever is assigned one
    for node in ast.walk(tree):  # x = StreamServer(...), also as StreamServer(...).prepare()
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            while isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Call):
                call = call.func.value
            if _dotted(call.func).rpartition(".")[2] in SERVER_CLASSES:
                servers.update(_dotted(t).rpartition(".")[2] for t in node.targets)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if _dotted(base).rpartition(".")[2] in SERVER_CLASSES:
                    out.append(f"{where}: class {node.name} extends {_dotted(base)}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            holder = _dotted(node.value).rpartition(".")[2]
            if holder in servers:
                out.append(f"{where}:{node.lineno}: {_dotted(node)} is private to the server")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "id":
            out.append(f"{where}:{node.lineno}: id(...) keys state by object identity")
    return out


def test_the_cluster_uses_only_the_servers_public_api() -> None:
    files = sorted(CLUSTER.glob("*.py"))
    assert any(p.name == "session_host.py" for p in files)
    found = [v for p in files for v in server_privacy_violations(p.read_text(), p.name)]
    assert found == []


OLD_WAY = '''
class HostServer(StreamServer):
    def _start_recorder(self, session, sid):
        return self._host._walk_recording(session, sid)

class SessionHost:
    def __init__(self, cfg):
        self.server = HostServer(cfg.serve, self).prepare()
        self._recordings = {}

    def _build(self, session):
        self._recordings[id(session)] = 1
        return self.server._session_factory, self.server._recording_failed
'''


def test_the_old_session_hosts_hooks_are_caught() -> None:
    found = server_privacy_violations(OLD_WAY.replace("HostServer(cfg", "StreamServer(cfg"), "old.py")
    assert found == [
        "old.py: class HostServer extends StreamServer",
        "old.py:12: id(...) keys state by object identity",
        "old.py:13: self.server._session_factory is private to the server",
        "old.py:13: self.server._recording_failed is private to the server",
    ]
