"""The pip command that adds an extra (train, data, a tracker) to this installation of runner.

runner-finetune is installed from a git URL, a clone or a wheel (docs/install.md), not from an index, so
a hint that said `pip install 'runner-finetune[wandb]'` would not work anywhere. pip records where a
distribution came from (PEP 610, direct_url.json); the hint installs the extra from that same place, so
it is a command that works as printed:

    git URL      pip install 'runner-finetune[wandb] @ git+https://host/runner.git@<commit>'
    a clone      pip install -e '/path/to/runner[wandb]'            (editable, as scripts/env.sh installs)
                 pip install 'runner-finetune[wandb] @ file:///path/to/runner'
    a wheel      pip install 'runner-finetune[wandb] @ file:///path/to/runner_finetune-0.1.0-py3-none-any.whl'
    an index     pip install 'runner-finetune[wandb]'

The metadata is read only when a hint is printed, never at import.
"""

from __future__ import annotations

import json
from urllib.parse import unquote, urlparse

DISTRIBUTION = "runner-finetune"


def pip_install(extra: str) -> str:
    """The pip command that installs runner's `extra` where this runner came from."""
    return install_command(extra, _direct_url())


def install_command(extra: str, direct_url: dict | None) -> str:
    """The pip command for `extra`, given pip's record of where runner came from (None: an index, or no
    record)."""
    requirement = f"{DISTRIBUTION}[{extra}]"
    if not direct_url or not isinstance(direct_url.get("url"), str):
        return f"pip install '{requirement}'"
    url = direct_url["url"]
    vcs = direct_url.get("vcs_info")
    if isinstance(vcs, dict):
        revision = vcs.get("commit_id") or vcs.get("requested_revision")
        return f"pip install '{requirement} @ {vcs.get('vcs', 'git')}+{url}" + (f"@{revision}'" if revision else "'")
    folder = direct_url.get("dir_info")
    if isinstance(folder, dict) and folder.get("editable") and url.startswith("file://"):
        return f"pip install -e '{unquote(urlparse(url).path)}[{extra}]'"
    return f"pip install '{requirement} @ {url}'"


def _direct_url() -> dict | None:
    """pip's record of where runner came from. Every distribution of the name is asked: a clone's folder
    on sys.path may hold a stale runner_finetune.egg-info without one, beside the installed dist-info."""
    from importlib import metadata

    for distribution in metadata.distributions(name=DISTRIBUTION):
        try:
            text = distribution.read_text("direct_url.json")
            record = json.loads(text) if text else None
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            return record
    return None
