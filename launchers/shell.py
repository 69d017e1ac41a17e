"""Quoting one value as one word of a generated bash script (Slurm's and PJM's job scripts).

:func:`shlex.quote` is exact for any text, but it leaves control characters raw inside its
single quotes: a carriage return or line feed in an argument (a ``python -c`` program, a PEM
key in an environment variable) lands in the script as is. Bash reads that correctly, but the
batch systems read the script too: ``sbatch`` refuses any script holding ``\\r\\n`` ("DOS line
breaks"), and ``#SBATCH`` / ``#PJM`` directives are found by scanning lines, so a value must
never begin a line of its own. A value with a control character is therefore written in bash's
ANSI-C quoting, ``$'a\\nb'``, where every control character is an escape: the script stays one
line per command, holds no control byte but its own line feeds, and bash still expands the word
to exactly the value. Everything else keeps :func:`shlex.quote`'s plain form, so ordinary
scripts read as before.

>>> print(shell_word("it's $HOME"))
'it'"'"'s $HOME'
>>> print(shell_word("a\\r\\nb'c"))
$'a\\r\\nb\\'c'
"""

from __future__ import annotations

import re
import shlex

from orchestrator.exceptions import InvalidRequestError

__all__ = ["shell_word"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shell_word(value: str, field: str = "argv") -> str:
    """``value`` as one bash word that expands to exactly ``value``, on one line.

    Args:
        value: Any text without NUL.
        field: The field named in the error.

    Raises:
        InvalidRequestError: for a NUL character, which no shell word (and no ``argv`` item or
            environment value of a process) can hold, or a lone surrogate, which has no UTF-8
            form to write to a script. The daemon refuses both at submission already.
    """
    if "\0" in value:
        raise InvalidRequestError(field, value, "must not contain NUL characters", "a")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequestError(field, value, f"not text: {e.reason}", "a") from None
    if not _CONTROL.search(value):
        return shlex.quote(value)
    # \xHH always with two digits: bash would otherwise take a following hex digit as part of it.
    body = "".join(_ESCAPES.get(c, f"\\x{ord(c):02x}" if _CONTROL.match(c) else c) for c in value)
    return f"$'{body}'"
