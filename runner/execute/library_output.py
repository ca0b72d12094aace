"""What the libraries print, kept off the terminal: the plan, one progress bar and the summary are
the user's; library output is not.

- Dropped: what the user cannot act on: deprecation notices meant for the code that calls the
  libraries (FutureWarning, DeprecationWarning) and progress bars (tqdm).
- Kept, once each: every other warning (Python warnings, and the WARNING records of the libraries'
  loggers), as a `library_warning` event in the run's events.jsonl. Those that come before the run
  directory exists (while planning) wait and are written when the run starts.

Call `quiet_libraries()` before the libraries are imported (some read their settings at import).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

LIBRARY_LOGGERS = ("transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub", "torch",
                   "mlflow", "alembic", "wandb")
DROPPED = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[tuple[str, str]] = set()
        self.pending: list[dict] = []
        self.deliver: Callable[[dict], None] | None = None

    def add(self, source: str, category: str, message: str) -> None:
        if (category, message) in self.seen:
            return
        self.seen.add((category, message))
        record = {"source": source, "category": category, "message": message[:4000]}
        if self.deliver is None:
            self.pending.append(record)
        else:
            self.deliver(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add(record.name, record.levelname, record.getMessage())
        except Exception:  # a handler must never raise into the library that logs
            self.handleError(record)

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.add(f"{filename}:{lineno}", category.__name__, str(message))


_collector = _Collector()


def quiet_libraries() -> None:
    """Route library warnings to the collector and turn progress bars off, for this process."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF and shard bars call tqdm directly
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # else it prints INFO lines to stderr
    for category in DROPPED:
        warnings.filterwarnings("ignore", category=category)
    warnings.showwarning = _collector.show_warning
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _collector not in logger.handlers:
            logger.addHandler(_collector)
        logger.propagate = False
    # transformers writes its records through a stderr handler of its own: replace it with ours.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.set_verbosity_warning()
    transformers_logging.disable_progress_bar()  # in case transformers was imported before the variables were set


def to_events(events) -> None:
    """From now on, library warnings go to this run's events (those collected so far first)."""
    def deliver(record: dict) -> None:
        events.event("library_warning", **record)

    pending, _collector.pending = _collector.pending, []
    _collector.deliver = deliver
    for record in pending:
        deliver(record)


def detach() -> None:
    """The run's event log is closing: collect again until the next one."""
    _collector.deliver = None
