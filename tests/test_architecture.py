"""The shape of the code: no import cycles (lazy imports inside functions count), the low layers import nothing
above them, the CLI reaches the library only through its public API, and nothing below the CLI prints."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "distillab"


def _module_name(path: Path) -> str:
    parts = ["distillab", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Every module of the package that ``name`` imports, wherever in the file the import stands."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("distillab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("distillab"):
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import data` names a module; `from .api import train` does not
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    if "Registry.discover(__name__, __path__)" in path.read_text():  # a folder of plug-ins, imported one by one
        found |= {m for m in MODULES if m.rsplit(".", 1)[0] == name}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_is_read_correctly():
    assert "distillab.files" in GRAPH["distillab.models"]
    assert "distillab.kd.losses.kd" in GRAPH["distillab.kd.losses"]  # discovered plug-ins count
    assert "distillab.data" in GRAPH["distillab.bench.dd"]  # `from .. import data as data_mod`


def test_no_import_cycles():
    assert _cycle() is None, " -> ".join(_cycle())


def test_a_cycle_would_be_found():
    GRAPH["distillab.files"] = GRAPH["distillab.files"] | {"distillab.api"}
    try:
        assert _cycle() is not None
    finally:
        GRAPH["distillab.files"] = _imports("distillab.files")


# The layer map: every module of the package belongs to the room whose name is the longest prefix of its own, and
# imports only from rooms of a lower layer or from its own room (its own package's modules). A new file in a room
# is covered by it; a new room is added here, where its place says what it may use. docs/design.md's table follows
# this order.
LAYERS = [
    ["distillab", "distillab._version", "distillab.errors", "distillab.seeds", "distillab.reporting",
     "distillab.distributed", "distillab.memory", "distillab.speed", "distillab.kd.functional",
     "distillab.service.protocol", "distillab.layouts"],
    ["distillab.specs", "distillab.compiling", "distillab.files", "distillab.dsa", "distillab.augmentation", "distillab.audits.mia",
     "distillab.service.tokens", "distillab.service.client"],
    ["distillab.registry", "distillab.checkpoint"],
    ["distillab.data", "distillab.models", "distillab.outputs", "distillab.datafree.records"],
    ["distillab.figures", "distillab.training", "distillab.kd.taps",
     "distillab.service.server", "distillab.service"],
    ["distillab.evaluation", "distillab.kd.teachers", "distillab.pseudolabel", "distillab.trajectories",
     "distillab.condense.unroll", "distillab.condense.synset"],
    ["distillab.kd.loss", "distillab.condense.labels", "distillab.datafree.method", "distillab.tuning",
     "distillab.condense.importing"],
    ["distillab.kd", "distillab.condense.method", "distillab.datafree", "distillab.audits.audit"],
    ["distillab.condense"],
    ["distillab.protocols"],
    ["distillab.audits"],
    ["distillab.runs"],
    ["distillab.testing", "distillab.api"],
    ["distillab.bench", "distillab.demo"],
    ["distillab.cli_text"],
    ["distillab.commands"],
    ["distillab.cli"],
    ["distillab.__main__"],
]
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str:
    """The longest room name that is the module itself or a package above it."""
    parts = module.split(".")
    return next(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in LAYER)


def _uphill(graph: dict) -> list[str]:
    return [f"{m} -> {t}" for m, targets in graph.items() for t in sorted(targets)
            if _room(t) != _room(m) and not t.startswith(_room(m) + ".") and LAYER[_room(t)] >= LAYER[_room(m)]]


def test_every_module_has_a_room_in_the_layer_map():
    assert all(_room(m) != "distillab" or m == "distillab" for m in MODULES), \
        [m for m in MODULES if _room(m) == "distillab" and m != "distillab"]


def test_imports_only_go_down_the_layer_map():
    assert _uphill(GRAPH) == []


@pytest.mark.parametrize("module, target", [("distillab.data", "distillab.models"),
                                            ("distillab.condense.synset", "distillab.condense.method"),
                                            ("distillab.kd.loss", "distillab.kd.objective"),
                                            ("distillab.training", "distillab.evaluation")])
def test_a_planted_upward_import_is_found(module, target):
    assert _uphill({**GRAPH, module: GRAPH[module] | {target}}) == [f"{module} -> {target}"]


LOW = {  # module -> the package modules it may import: nothing above it
    "distillab.errors": set(),
    "distillab._version": set(),
    "distillab.specs": {"distillab.errors"},
    "distillab.registry": {"distillab.errors", "distillab.specs"},
    "distillab.seeds": set(),
    "distillab.reporting": set(),
    "distillab.files": {"distillab.errors", "distillab._version"},
}


@pytest.mark.parametrize("module", sorted(LOW))
def test_low_layers_use_nothing_above_them(module):
    assert GRAPH[module] <= LOW[module], GRAPH[module] - LOW[module]


def test_the_cli_goes_through_the_public_api():
    """cli and the command files (distillab.commands) reach the library only through its public API."""
    allowed = {"distillab.api", "distillab.bench", "distillab.demo", "distillab.errors", "distillab._version",
               "distillab.cli_text"}
    cli = [m for m in GRAPH if m == "distillab.cli" or _room(m) == "distillab.commands"]
    assert len(cli) > 2, cli
    outside = {f"{m} -> {t}" for m in cli for t in GRAPH[m] if t not in allowed and _room(t) != "distillab.commands"}
    assert not outside, outside


def test_nothing_below_the_cli_prints():
    printing = []
    for name, path in MODULES.items():
        if name in ("distillab.cli", "distillab.cli_text"):  # the CLI layer
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{name}:{node.lineno}")
    assert not printing, printing


def _builds_run_output(path: Path) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "RunOutput"]


def test_one_run_skeleton():
    """Every command's run opens its folder through runs.run.Run (clock, reporter, recorded call, config, metrics,
    last line): no second copy of that skeleton builds an output folder by hand."""
    by_hand = [f"{name}:{line}" for name, path in MODULES.items() if name != "distillab.runs.run"
               for line in _builds_run_output(path)]
    assert not by_hand, by_hand


def test_a_run_built_by_hand_is_found(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from distillab.outputs import RunOutput\n\n\ndef run(out):\n    with RunOutput(out, 'x') as r:\n"
                       "        pass\n")
    assert _builds_run_output(planted) == [5]
