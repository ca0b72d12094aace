"""runner: declarative fine-tuning jobs for language models (spec -> plan -> run)."""

__version__ = "0.1.0"
