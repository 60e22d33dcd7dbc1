"""The layers of docs/architecture.md, held against the code. Each layer is whole folders of
`rayft/` (the package's own top level, `rayft/*.py`, is the entry points), so a module's path
tells its layer. Every `rayft` import (at module level, inside a function, or under
`if TYPE_CHECKING:`) points to the importer's own layer or a lower one; no modules import each
other in a loop, and no folders do either (read as folders, no arrow runs back up). A new folder
must be placed in a layer here (and in the docs' picture)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "rayft"

# Bottom first: (layer, its folders under rayft/); "" is rayft/ itself (cli, __main__, rewards, the face).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("core",)),
    ("schema sections", ("schema",)),
    ("run records", ("records",)),
    ("models", ("models",)),
    ("toolkit", ("compute", "generation", "metrics")),
    ("data", ("data",)),
    ("rl", ("rl",)),
    ("stages", ("stages",)),
    ("config", ("config",)),
    ("drivers", ("train", "eval", "datatools", "serve", "cluster")),
    ("sweeps", ("tune",)),
    ("entry points", ("", "ui", "demo")),
]


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The rayft modules that `name` imports anywhere in its file (a `from package import x`
    counts as importing `package.x` when that is a module, else `package`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in run_time_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def run_time_nodes(tree: ast.AST):
    """Every node of `tree`, those under `if TYPE_CHECKING:` included: an annotation that names a
    module above is still a dependency on it."""
    yield from ast.walk(tree)


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def folder_of(module: str) -> str:
    """The folder under rayft/ that holds `module` ("" for rayft/ itself)."""
    parts = module.split(".")[1:]
    return parts[0] if parts and (ROOT / parts[0]).is_dir() else ""


def layer_of(module: str) -> int:
    folder = folder_of(module)
    return next((i for i, (_, folders) in enumerate(LAYERS) if folder in folders), -1)


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_no_import_points_up():
    upward = [f"{src} ({LAYERS[layer_of(src)][0]}) -> {dst} ({LAYERS[layer_of(dst)][0]})"
              for src, targets in import_graph().items() for dst in sorted(targets)
              if layer_of(dst) > layer_of(src)]
    assert upward == []


def test_the_docs_picture_shows_these_layers():
    """docs/architecture.md draws the layers top down, one name at the start of a line each."""
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    picture = text[text.index("## Layers"):].split("```")[1]
    drawn = [line[2:20].strip() for line in picture.splitlines() if line[2:3].isalpha()]
    assert drawn == [name for name, _ in reversed(LAYERS)]


def test_every_folder_is_in_one_layer():
    folders = [f for _, fs in LAYERS for f in fs]
    assert len(folders) == len(set(folders))
    on_disk = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert on_disk == set(folders) - {""}


def test_no_folder_cycles():
    """Read as folders (every import between two folders an arrow), the tree has no loop."""
    graph: dict[str, set[str]] = {}
    for src, targets in import_graph().items():
        graph.setdefault(folder_of(src) or "rayft", set()).update(
            folder_of(t) or "rayft" for t in targets if folder_of(t) != folder_of(src))
    assert strongly_connected(graph) == []


def test_no_import_cycles():
    assert strongly_connected(import_graph()) == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The loops of the graph (Tarjan's components of more than one module), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    loops.append(sorted(component))
    return loops


def test_the_checks_catch_a_loop():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_code_map_names_every_module_in_its_folders_entry():
    """docs/architecture.md's code map: an entry per folder (`name/` at the start of a line, the root's
    files under `rayft/`), and each module of the folder named in its entry."""
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    block = text[text.index("## Code map"):text.index("## Layers")].split("```")[1]
    entries: dict[str, str] = {}
    current, in_root = None, False
    for line in block.splitlines():
        head = line.split()[0] if line.strip() else ""
        if line[:1].isalpha() and head.endswith("/"):
            current, in_root = ("", True) if head == "rayft/" else (head.rstrip("/"), False)
            entries[current] = line
        elif in_root and line[2:3].isalpha() and head.endswith("/"):  # ui/, demo/: entry points beside rayft/*.py
            current = head.rstrip("/")
            entries[current] = line
        elif current is not None:
            entries[current] += "\n" + line
    missing = [f"{folder or 'rayft'}/{path.stem}" for path in sorted(ROOT.rglob("*.py")) if path.name != "__init__.py"
               for folder in [path.parent.name if path.parent != ROOT else ""]
               if path.stem not in entries.get(folder, "")]
    assert missing == []
