"""What text a submission's string fields may hold: the rules every face of the API shares.

A job's strings end up as a process's arguments and environment, in a batch script, in a
database row and in the terminal of whoever lists the queue, so some text can never run:

- NUL: a C string ends at it, so no argument, environment value, path or file name can hold
  one (``execve`` refuses it).
- Lone surrogates (code points U+D800 to U+DFFF outside a pair): not characters at all, so they
  have no UTF-8 form and cannot be written to a script, a database or a pipe. JSON lets a
  client send them (``"\\ud800"``), and Python's command-line decoding makes them of bytes that
  are not UTF-8, so they must be refused explicitly.
- Control characters in a name (job name, user, account, working directory, the short
  grammars): a name is one line of printable text. A CR or LF would split a ``#SBATCH`` line
  or a listing's row, an ESC would drive the terminal of whoever lists the queue.

CR, LF and other control characters stay legitimate in ``argv`` items, ``env`` values and the
``script``: ``python -c`` programs, PEM keys and JSON documents hold newlines, and every backend
passes them to the job intact.

The rules are plain functions on ``(field, value)`` so the JSON validation of today
(:mod:`orchestrator.daemon.spec`) and typed request models later (a pydantic validator calls
:func:`check_text` and re-raises) apply exactly the same ones.

>>> check_text("argv", "print(1)\\nprint(2)")
>>> try:
...     check_text("name", "a\\nb", single_line=True, example="train")
... except InvalidRequestError as e:
...     print(e.field, "|", e.reason)
name | control character U+000A at index 1: a name is one line of printable text
"""

from __future__ import annotations

import re

from orchestrator.exceptions import InvalidRequestError

__all__ = ["check_text", "text_problem"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SHOWN = 60
"""Characters of a refused value that the error shows (a script may be a megabyte long)."""


def text_problem(value: str, *, single_line: bool = False) -> str | None:
    """What makes ``value`` unacceptable, or None if nothing does.

    Args:
        value: The text.
        single_line: A name: no control character at all (CR, LF, tab, ESC, ...). Otherwise
            only NUL and lone surrogates are refused.
    """
    if (i := value.find("\0")) >= 0:
        return f"NUL character at index {i}: no program argument, variable or path can hold one"
    if (m := _SURROGATE.search(value)) is not None:
        return (
            f"lone surrogate U+{ord(m.group()):04X} at index {m.start()}: not a character, it "
            "has no UTF-8 form (send text, or bytes decoded as UTF-8)"
        )
    if single_line and (m := _CONTROL.search(value)) is not None:
        return (
            f"control character U+{ord(m.group()):04X} at index {m.start()}: a name is one line "
            "of printable text"
        )
    return None


def check_text(field: str, value: str, *, single_line: bool = False, example: str = "") -> None:
    """Refuse ``value`` if it breaks the rules of this module.

    Args:
        field: The field named in the error (``argv``, ``env.PEM``, ``jobs[2].name``).
        value: The text given.
        single_line: ``value`` is a name, refused with any control character; else NUL and
            lone surrogates only (``argv``, ``env`` values, ``script``).
        example: A valid value for the error (default: ``train`` for a name, ``a`` otherwise).

    Raises:
        InvalidRequestError: naming ``field``.
    """
    problem = text_problem(value, single_line=single_line)
    if problem is None:
        return
    shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    # The error travels to logs and replies that are UTF-8: a surrogate is shown as its escape.
    shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
    raise InvalidRequestError(field, shown, problem, example or ("train" if single_line else "a"))
