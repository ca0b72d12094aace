"""The layers of the import graph (DESIGN.md: cli -> commands -> (execute | daemon) -> plan -> spec): a package
never imports the ones above it or beside it, at module level or inside a function (a lazy import is still a
dependency). The daemon runs `runner run --plan` and the workers as children; it never imports the commands
or the executor's code."""

import ast
from pathlib import Path

from tests.conftest import REPO

FORBIDDEN = {
    "runner.daemon": ("runner.cli", "runner.commands", "runner.execute"),
    "runner.plan": ("runner.cli", "runner.commands", "runner.daemon", "runner.execute", "runner.launch"),
    "runner.spec": ("runner.cli", "runner.commands", "runner.daemon", "runner.execute", "runner.launch",
                    "runner.plan"),
}
"""A package -> the packages it must not import."""


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a module's source, wherever it is (a function, a branch)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{alias.name}")
                                                     for alias in node.names]
    return found


def crossings(package: str, forbidden: tuple[str, ...]) -> list[str]:
    folder = REPO.joinpath(*package.split("."))
    return [f"{path.relative_to(REPO)}:{line}: imports {module}"
            for path in sorted(folder.rglob("*.py")) for line, module in imports_of(path.read_text())
            if any(module == other or module.startswith(other + ".") for other in forbidden)]


def test_no_package_imports_a_layer_it_must_not():
    found = [crossing for package, forbidden in FORBIDDEN.items() for crossing in crossings(package, forbidden)]
    assert found == [], "\n".join(found)


def test_a_lazy_import_counts():
    source = "import os\n\ndef later():\n    from runner.commands.validate import validate\n    import runner.execute\n"
    assert imports_of(source) == [(1, "os"), (4, "runner.commands.validate"), (4, "runner.commands.validate.validate"),
                                  (5, "runner.execute")]
    assert all(Path(REPO / "runner" / package.split(".")[1]).is_dir() for package in FORBIDDEN)
