"""One family for every error a user can fix.

Every module's user-facing error class subclasses :class:`FakeproofError`; ``fakeproof.cli.main``
catches this base alone and prints its message as one line (exit code 2), never a traceback.
Messages name the file or params key at fault and what to do about it.
"""

from __future__ import annotations

from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


class FakeproofError(Exception):
    """A state the user can fix (bad params, a missing or unusable file, an empty split ...)."""


class TrainingError(FakeproofError):
    """Training cannot proceed or produced no usable model (one class only, NaN loss ...)."""


class ModelError(FakeproofError, RuntimeError):
    """A model name, weights file or checkpoint is unusable (one-line message)."""


class EvaluationError(FakeproofError):
    """Evaluation cannot proceed (an empty test split, a sample without a class ...)."""


def registered(registry: Mapping[str, T], name: str, error: type[FakeproofError], what: str,
               choices: Iterable[str] | None = None) -> T:
    """``registry[name]``; an unknown ``name`` raises ``error``: ``what``, then the known names
    (``choices``, default the registry's)."""
    try:
        return registry[name]
    except KeyError:
        raise error(f"{what}; use one of {', '.join(registry if choices is None else choices)}"
                    ) from None
