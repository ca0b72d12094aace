"""The README and the pages under docs/: every link leads somewhere, and every command shown runs.

Commands are the lines of ```bash blocks and the `$ ` lines of ```console blocks. Each `runner` command is
parsed by runner's own command line (a flag or command that does not exist fails here), and the ones that
only read (validate, lock --check, schema --check, --help) run for real on this repository; a script or a
benchmark must exist; an extra in a pip command must be one of pyproject.toml's; any other program must be
one a reader has (git, pip, python, ...), so a typo in a command name fails too.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runner.cli import parser_for
from runner.errors import UsageError
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OTHER_PROGRAMS = {"python", "python3", "pip", "git", "mkdir", "cp", "sudo", ".", "source", "tensorboard", "mlflow",
                  "wandb", "scancel", "squeue", "sbatch", "srun", "scontrol", "journalctl", "systemctl", "hf",
                  "printf", "cd", "export", "rm", "pre-commit"}
READ_ONLY = {"validate", "schema", "lock"}


def code_blocks(page: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), re.S | re.M)


def commands(page: Path) -> list[str]:
    found = []
    for language, text in code_blocks(page):
        if language == "bash":  # (```sh: a script shown, like the sbatch script, not commands to type)
            lines = [line for line in text.replace("\\\n", " ").splitlines()
                     if line.strip() and not line.lstrip().startswith("#")]
        elif language == "console":
            lines = [line[2:] for line in text.replace("\\\n", " ").splitlines() if line.startswith("$ ")]
        else:
            continue
        for line in lines:
            words = shlex.split(line, comments=True)
            simple = []
            for word in words + [";"]:
                if word in (";", "&&", "||", "|", "&"):
                    if simple:
                        found.append(shlex.join(simple))
                    simple = []
                else:
                    simple.append(word)
    return found


SHOWN = [(page.relative_to(REPO).as_posix(), command) for page in PAGES for command in commands(page)]


def test_the_readme_starts_with_the_two_commands_and_shows_the_tour():
    readme = (REPO / "README.md").read_text()
    assert readme.startswith("# runner\n\n```bash\nbash scripts/demo ")
    assert readme.splitlines()[4].startswith("bash scripts/test ")
    assert len(readme.splitlines()) < 200  # the first hour; the rest is under docs/
    assert len(SHOWN) > 40  # the pages do show commands (53 when this was written)


@pytest.mark.parametrize("page, command", SHOWN)
def test_every_command_shown_runs(page, command, tmp_path):
    words = shlex.split(command)
    if words[0] == "sudo":
        words = words[1:]
    program = words[0]
    if program == "runner":
        try:
            arguments = parser_for(words[1:]).parse_args(words[1:])
        except UsageError as error:
            pytest.fail(f"{page}: `{command}`: {error.message}")
        except SystemExit as done:  # --help, --version
            assert done.code == 0, f"{page}: `{command}`"
            return
        if arguments.command in READ_ONLY and (arguments.command != "lock" or arguments.check):
            extra = ["--dir", str(tmp_path / "schemas"), "--docs", str(tmp_path / "docs")] \
                if arguments.command == "schema" and not arguments.check else []
            if all(Path(REPO / path).exists() for path in getattr(arguments, "paths", [])):
                ran = subprocess.run([sys.executable, "-m", "runner", *words[1:], *extra], cwd=REPO,
                                     capture_output=True, text=True, timeout=120)
                assert ran.returncode == 0, f"{page}: `{command}`:\n{ran.stdout}{ran.stderr}"
    elif program == "bash":
        assert (REPO / words[1]).is_file(), f"{page}: `{command}`: no {words[1]}"
    elif program in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
        assert (REPO / words[1]).is_file(), f"{page}: `{command}`: no {words[1]}"
    elif program in ("python", "python3") and words[1:2] == ["-m"] and words[2].startswith("tests."):
        assert (REPO / (words[2].replace(".", "/") + ".py")).is_file(), f"{page}: `{command}`"
    elif program == "pip" and words[1] == "install":
        extras = pyproject_extras()
        for word in words[2:]:
            for named in re.findall(r"\[([\w,-]+)\]", word):
                for extra in named.split(","):
                    assert extra in extras, f"{page}: `{command}`: runner-finetune has no extra {extra!r}"
            assert not word.startswith("runner-finetune[") or " @ " in word, f"{page}: `{command}`: {NOT_ON_AN_INDEX}"
    else:
        assert program in OTHER_PROGRAMS, f"{page}: `{command}`: {program!r} is not a command a reader has"


NOT_ON_AN_INDEX = "runner-finetune is on no package index: add an extra from where runner came from (docs/install.md)"
INDEX_FORM = re.compile(r"pip install ['\"]?runner-finetune\[[\w,-]+\]['\"`]")
"""`pip install 'runner-finetune[x]'`, the form that needs a package index: it fails as written (issue 21)."""


def test_no_page_docstring_or_hint_offers_the_package_index_form():
    """Prose and inline code too, and runner's own text (hints, and the docstrings docs/spec.md is made of):
    only runner/install.py knows the index form, for an installation that came from one."""
    sources = [*PAGES, *(path for path in (REPO / "runner").rglob("*.py") if path.name != "install.py")]
    found = [f"{path.relative_to(REPO)}:{number}" for path in sources
             for number, line in enumerate(path.read_text().splitlines(), 1) if INDEX_FORM.search(line)]
    assert not found, f"{NOT_ON_AN_INDEX}: {', '.join(found)}"


def pyproject_extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(match) for match in re.findall(r"^#+ (.*)$", text, re.M)}


LINKS = [(page, target) for page in PAGES
         for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M))
         if not re.match(r"https?://", target)]


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_every_link_leads_somewhere(page, target):
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.name}: {target}: no such file"
    if anchor:
        assert anchor in anchors(file), f"{page.name}: {target}: no heading with that anchor in {file.name}"


def test_the_index_and_the_readme_list_every_page():
    pages = {page.name for page in (REPO / "docs").glob("*.md")} - {"index.md"}
    for listing in (REPO / "docs" / "index.md", REPO / "README.md"):
        text = listing.read_text()
        missing = [name for name in pages if f"{name})" not in text]
        assert not missing, f"{listing.name} does not link {missing}"
