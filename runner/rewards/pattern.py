"""Regular expressions from a spec, on RE2: matching takes time linear in the text, and compiling a pattern
takes bounded memory, whatever the pattern.

Python's `re` backtracks: `(a+)+$` against forty a's and a b takes longer than a run, and a spec could
hold such a pattern (on purpose or not) and stall a shared box. RE2 (`google-re2`, a wheel on PyPI) has
no backtracking, and so no backreferences or lookaround; a pattern that uses them is a validate error.
It is an extra (`rewards`, part of `train`): `runner validate` without it checks
everything else and says that the pattern was not checked; a run without it fails at its start.
"""

from __future__ import annotations

import functools

MAX_PATTERN = 1000
"""Characters of a pattern."""
MAX_PROGRAM_BYTES = 8 << 20
"""Memory RE2 may use to compile a pattern (its default); a larger one is an error, not a bigger program."""


def re2_install() -> str:
    """The command that installs RE2 (runner's `rewards` extra; `train` brings it too)."""
    from runner.install import pip_install

    return pip_install("rewards")


class PatternError(ValueError):
    """A pattern RE2 does not accept, said in RE2's words."""


class EngineMissing(RuntimeError):
    """google-re2 is not installed here."""


def available() -> bool:
    try:
        _re2()
    except EngineMissing:
        return False
    return True


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str, *, case_sensitive: bool = True):
    """The compiled pattern; PatternError when it is too long or RE2 refuses it, EngineMissing without RE2."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN}")
    re2 = _re2()
    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False  # RE2 would print each refusal on stderr; the error says it
    options.case_sensitive = case_sensitive
    try:
        return re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        raise PatternError(f"RE2 does not accept this pattern: {reason}") from None


def _re2():
    try:
        import re2
    except ImportError:
        raise EngineMissing(f"regex checks run on RE2, which is not installed here: {re2_install()}") from None
    return re2
