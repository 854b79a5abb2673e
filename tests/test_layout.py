"""The package's folders in layers, each importing only from the ones below it: what the code is made of
reads from the bottom up, and no import circle can form. Read from the source (ast), so nothing is
imported here; an import inside a module's `if __name__ == "__main__":` block is the command line's,
and does not count."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "speedrun"
# bottom to top; the commands (the package's top-level modules) sit above them all
LAYERS = ["system", "data", "nets", "optim", "engine", "runs"]
COMMANDS = "commands"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module):
    """The layer of a `speedrun...` module: its folder, or the commands' for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else COMMANDS


def is_main_block(node):
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def imported(path):
    """The speedrun modules (or packages) `path` imports, outside its __main__ block."""
    found = set()

    def visit(node):
        if is_main_block(node):
            return
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: a relative import; the package imports absolutely")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("speedrun"):
            for alias in node.names:  # `from speedrun.data import sources` imports the module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if module_path(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("speedrun"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {module_name(path)}


def module_path(module):
    relative = Path(*module.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").exists() or (PACKAGE.parent / relative).is_dir()


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
ORDER = LAYERS + [COMMANDS]


def test_every_module_sits_in_a_layer_folder_or_is_a_command():
    folders = {path.parent.name for path in PACKAGE.rglob("*.py") if path.parent != PACKAGE}
    assert folders == set(LAYERS)


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m) != COMMANDS or m.count(".") == 1])
def test_imports_flow_down_the_layers(module):
    """A module imports from its own layer or the ones below, never above."""
    mine = ORDER.index(layer(module))
    above = sorted(m for m in imported(MODULES[module]) if m != "speedrun" and ORDER.index(layer(m)) > mine)
    assert above == [], f"{module} ({layer(module)}) imports from above it"


def test_no_import_circle():
    graph = {module: {m for m in imported(path) if m in MODULES} for module, path in MODULES.items()}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
