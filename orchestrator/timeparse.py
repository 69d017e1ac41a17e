"""Times as Slurm's commands take them (``sbatch --begin``, ``sacct -S/-E``); standard library only.

``now``, ``now+N[unit]`` and ``now-N[unit]`` (seconds by default; minutes, hours, days,
weeks), a local date and time ``YYYY-MM-DD[THH:MM[:SS]]``, a time of day ``HH:MM[:SS]``, or a
number of epoch seconds.

>>> parse_time("now-2hours", 10_000.0)
2800.0
"""

from __future__ import annotations

import re

__all__ = ["parse_time"]

_UNITS = {
    **dict.fromkeys(("", "s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}
_RELATIVE = re.compile(r"now(?:([+-])([0-9]{1,9})([a-z]*))?")
_EPOCH = re.compile(r"[0-9]{1,11}(?:\.[0-9]+)?")


def parse_time(text: str, now: float, *, next_time_of_day: bool = False) -> float:
    """Epoch seconds for ``text`` (see the module docstring).

    Args:
        text: The time as given.
        now: The current time (epoch seconds).
        next_time_of_day: A bare ``HH:MM[:SS]`` means its next occurrence (as ``--begin``),
            else today's (as ``sacct -S``).

    Raises:
        ValueError: the text is none of those forms (the message says which are).
    """
    word = text.strip().lower()
    relative = _RELATIVE.fullmatch(word)
    if relative:
        sign, count, unit = relative.group(1), relative.group(2), relative.group(3) or ""
        if unit not in _UNITS:
            raise ValueError("units are seconds, minutes, hours, days or weeks")
        offset = int(count or 0) * _UNITS[unit]
        return now - offset if sign == "-" else now + offset
    if _EPOCH.fullmatch(word):
        return float(word)
    import datetime as dt

    try:
        if "-" in word:
            return dt.datetime.fromisoformat(word.upper()).timestamp()
        clock = dt.time.fromisoformat(word)
    except ValueError:
        raise ValueError(
            "expected now[+-N[unit]], YYYY-MM-DD[THH:MM[:SS]], HH:MM[:SS] or epoch seconds"
        ) from None
    today = dt.datetime.combine(dt.datetime.fromtimestamp(now).date(), clock).timestamp()
    return today + 86400 if next_time_of_day and today < now else today
