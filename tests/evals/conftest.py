"""Fixtures of the eval tests (tests/chatty.py)."""

from tests.chatty import chatty, own_cache  # noqa: F401
