"""The house rules, read from the source: every module's imports (those inside functions too) parsed with ast.

- `controls` imports no torch and no GL (moderngl, pyglet), not even through another of our modules, so the
  browser path, the window and the tests share it without either;
- `runtime` never imports `viewer` or `stream` (they plug in through entry points);
- no import circle among our modules anywhere (a circle through an import inside a function still ties
  the two modules together: neither can be read, tested or replaced alone);
- no product module imports the tests (what a command runs ships with the package);
- no circle among rooms either: a room is a sub-package (`runtime.sana_wm`, `stream.webrtc`) or the root
  modules of a top package (`runtime`, `stream`), and the rooms stand in layers, e.g. runtime <
  sana_wm, matrix_game < accel < worlds < bench < cli, and record < webrtc < cluster < stream's commands;
- the viewer imports only `stream.record` of stream; `stream.record` never reaches webrtc or cluster,
  not even through another module.
- no class in `stream` has more than 15 methods (those written in its body: a class that big holds more
  than one thing; split it into parts that each hold one).

Each rule also runs on small synthetic modules that break it, so the checker is seen to fail.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("runtime", "controls", "viewer", "stream", "shaders", "tests")
NO_TORCH_NO_GL = ("torch", "moderngl", "pyglet")
MAX_METHODS = 15  # of a class in stream/


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["worldwalk", *parts])


def read_tree() -> dict[str, tuple[str, bool]]:
    """module name -> (source, is a package) for every .py file of the folders."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[_module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return out


def imports_of(name: str, source: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every module `name` imports anywhere in its body: ours resolved to module names (`from pkg import
    mod` names pkg.mod when that is a module), others as their top-level name."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(target)
    out = set()
    for m in found:
        if m.startswith("worldwalk."):
            while m not in modules and "." in m:  # `import worldwalk.runtime.world.ModelSpec`-like spellings
                m = m.rpartition(".")[0]
            out.add(m)
        else:
            out.add(m.split(".")[0])
    return out


def import_graph(tree: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    names = set(tree)
    return {name: imports_of(name, src, pkg, names) for name, (src, pkg) in tree.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Our modules `start` imports, directly or through others (itself included)."""
    seen, todo = {start}, [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m in graph and m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken house rule, one line each."""
    bad = []
    for name in sorted(graph):
        if name.startswith("worldwalk.controls"):
            for m in sorted(reachable(graph, name)):
                hit = sorted(graph[m] & set(NO_TORCH_NO_GL))
                if hit:
                    via = "" if m == name else f" through {m}"
                    bad.append(f"{name} imports {', '.join(hit)}{via}: controls must stay free of torch and GL")
        if name.startswith("worldwalk.runtime"):
            for m in sorted(graph[name]):
                if m.startswith(("worldwalk.viewer", "worldwalk.stream")):
                    bad.append(f"{name} imports {m}: runtime never imports viewer or stream")
        if not name.startswith("worldwalk.tests"):
            for m in sorted(graph[name]):
                if m == "tests" or m.startswith("worldwalk.tests"):
                    bad.append(f"{name} imports {m}: product code never imports the tests")
        if name.startswith("worldwalk.viewer"):
            for m in sorted(graph[name]):
                if m.startswith("worldwalk.stream") and not m.startswith("worldwalk.stream.record"):
                    bad.append(f"{name} imports {m}: the viewer imports only stream.record of stream")
        if name.startswith("worldwalk.stream.record"):
            for m in sorted(reachable(graph, name)):
                for d in sorted(graph[m]):
                    if d.startswith(("worldwalk.stream.webrtc", "worldwalk.stream.cluster")):
                        via = "" if m == name else f" through {m}"
                        bad.append(f"{name} imports {d}{via}: record never imports webrtc or cluster")
    bad += [f"import circle: {' <-> '.join(c)}" for c in circles(graph)]
    bad += [f"room circle: {' <-> '.join(c)}" for c in circles(room_graph(graph))]
    return bad


def room_of(name: str, packages: set[str]) -> str:
    """The room a module is in: its innermost package below a top package (`worldwalk.runtime.sana_wm`),
    else its top package (`worldwalk.runtime` for the runtime's root modules)."""
    parts = name.split(".")
    for k in range(len(parts), 2, -1):
        if ".".join(parts[:k]) in packages:
            return ".".join(parts[:k])
    return ".".join(parts[:2])


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Room -> the other rooms its modules import."""
    packages = {m for m in graph if any(o.startswith(m + ".") for o in graph)}
    rooms: dict[str, set[str]] = {}
    for name, deps in graph.items():
        here = room_of(name, packages)
        rooms.setdefault(here, set()).update(room_of(d, packages) for d in deps if d in graph)
        rooms[here].discard(here)
    return rooms


def test_the_tree_keeps_the_house_rules() -> None:
    graph = _tree_graph()
    assert len(graph) > 100 and "worldwalk.runtime.world" in graph and "worldwalk.controls" in graph
    assert "worldwalk.runtime.chunk" in graph["worldwalk.runtime.world"]  # the parser sees our imports
    assert violations(graph) == []


@functools.cache
def _tree_graph() -> dict[str, set[str]]:
    return import_graph(read_tree())


def _broken_by(extra: dict[str, str]) -> list[str]:
    """The violations that the synthetic modules `extra` (name -> source) bring to the tree."""
    graph = dict(_tree_graph())
    before = set(violations(graph))
    names = set(graph) | set(extra)
    graph.update({name: imports_of(name, src, False, names) for name, src in extra.items()})
    return [v for v in violations(graph) if v not in before]


def test_a_torch_import_inside_a_controls_function_is_caught() -> None:
    broken = _broken_by({"worldwalk.controls.synthetic": "def f():\n    import torch.nn\n"})
    assert broken == [
        "worldwalk.controls.synthetic imports torch: controls must stay free of torch and GL"
    ]


def test_gl_reached_through_another_module_is_caught() -> None:
    broken = _broken_by({
        "worldwalk.controls.synthetic": "from worldwalk.viewer import synthetic_gl\n",
        "worldwalk.viewer.synthetic_gl": "import moderngl\n",
    })
    assert any("controls.synthetic imports moderngl through worldwalk.viewer.synthetic_gl" in v
               for v in broken)


def test_runtime_importing_viewer_or_stream_is_caught() -> None:
    broken = _broken_by({"worldwalk.runtime.synthetic": "def f():\n    from ..stream.record import recorder\n"})
    assert broken[0] == (
        "worldwalk.runtime.synthetic imports worldwalk.stream.record.recorder: runtime never imports viewer or stream"
    )  # (and a room circle: stream.record imports the runtime)


def test_a_circle_through_a_lazy_import_is_caught() -> None:
    broken = _broken_by({
        "worldwalk.runtime.synthetic_a": "from . import synthetic_b\n",
        "worldwalk.runtime.synthetic_b": "def f():\n    from worldwalk.runtime.synthetic_a import g\n",
    })
    assert broken == [
        "import circle: worldwalk.runtime.synthetic_a <-> worldwalk.runtime.synthetic_b"
    ]


def test_a_product_module_importing_the_tests_is_caught() -> None:
    broken = _broken_by({"worldwalk.stream.synthetic": "def f():\n    from tests.serve_harness import walk\n"})
    assert broken == ["worldwalk.stream.synthetic imports tests: product code never imports the tests"]


def test_a_circle_between_rooms_is_caught() -> None:
    # no circle between modules: accel.apply imports sana_wm.cache, not the synthetic module
    broken = _broken_by({
        "worldwalk.runtime.sana_wm.synthetic": "def f():\n    from worldwalk.runtime.accel import apply\n",
    })
    assert broken == ["room circle: worldwalk.runtime.accel <-> worldwalk.runtime.sana_wm"]


def test_the_viewer_importing_webrtc_is_caught() -> None:
    broken = _broken_by({"worldwalk.viewer.synthetic": "from worldwalk.stream.webrtc import offer\n"})
    assert broken == ["worldwalk.viewer.synthetic imports worldwalk.stream.webrtc.offer: "
                      "the viewer imports only stream.record of stream"]


def test_record_reaching_cluster_through_another_module_is_caught() -> None:
    broken = _broken_by({
        "worldwalk.stream.record.synthetic": "from worldwalk.runtime import synthetic_mid\n",
        "worldwalk.runtime.synthetic_mid": "def f():\n    from worldwalk.stream.cluster import routing\n",
    })
    assert ("worldwalk.stream.record.synthetic imports worldwalk.stream.cluster.routing through "
            "worldwalk.runtime.synthetic_mid: record never imports webrtc or cluster") in broken


def crowded_classes(tree: dict[str, tuple[str, bool]]) -> list[str]:
    """Every class in stream/ with more than MAX_METHODS methods in its body, one line each."""
    bad = []
    for name, (source, _) in sorted(tree.items()):
        if not name.startswith("worldwalk.stream"):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                k = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                if k > MAX_METHODS:
                    bad.append(f"{name}.{node.name} has {k} methods: no class in stream has more than {MAX_METHODS}")
    return bad


def test_no_class_in_stream_has_more_than_15_methods() -> None:
    tree = read_tree()
    assert "worldwalk.stream.webrtc.server" in tree
    assert crowded_classes(tree) == []


def test_a_crowded_class_in_stream_is_caught() -> None:
    def cls(n: int) -> str:
        methods = (f"    {'async ' * (i % 2)}def m{i}(self):\n        pass\n" for i in range(n))
        return "class Crowded:\n" + "".join(methods)

    tree = {
        "worldwalk.stream.webrtc.synthetic": (cls(16), False),
        "worldwalk.stream.synthetic_fits": (cls(15), False),
        "worldwalk.runtime.synthetic": (cls(40), False),  # the rule is stream's
    }
    assert crowded_classes(tree) == [
        "worldwalk.stream.webrtc.synthetic.Crowded has 16 methods: no class in stream has more than 15"
    ]

