"""Slurm-style host lists: ``n[1-8]``, ``c[0001-0032,0040]``, ``s[1-2],s9``.

Pure functions, shared by the topology loader and (later) the Slurm backend.

>>> expand_hostlist("n[1-3],x")
['n1', 'n2', 'n3', 'x']
>>> compress_hostlist(["n1", "n2", "n3", "n7"])
'n[1-3,7]'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["compress_hostlist", "expand_hostlist"]

_GROUP = re.compile(r"([^,\[\]]*)(?:\[([^\]]*)\])?([^,\[\]]*)")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm host list expression into host names, in order.

    Raises:
        ValueError: on unbalanced brackets, a reversed range or a non-numeric range.
    """
    hosts: list[str] = []
    for part in _split_top_level(text):
        match = _GROUP.fullmatch(part)
        if match is None:
            raise ValueError(f"cannot parse host list element {part!r} in {text!r}")
        prefix, ranges, suffix = match.groups()
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for rng in ranges.split(","):
            lo_text, _, hi_text = rng.partition("-")
            if not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
                raise ValueError(f"non-numeric range {rng!r} in host list {text!r}")
            width = len(lo_text)
            lo = int(lo_text)
            hi = int(hi_text) if hi_text else lo
            if hi < lo:
                raise ValueError(f"reversed range {rng!r} in host list {text!r}")
            hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(lo, hi + 1))
    return hosts


_NAME = re.compile(r"^(.*?)(\d+)$")


def compress_hostlist(hosts: Iterable[str]) -> str:
    """Compress host names into a Slurm host list (inverse of :func:`expand_hostlist`)."""
    groups: dict[tuple[str, int], list[int]] = {}
    order: list[tuple[str, int]] = []
    plain: list[str] = []
    for host in hosts:
        match = _NAME.match(host)
        if match is None:
            plain.append(host)
            continue
        digits = match.group(2)
        # Zero-padded numbers ("c0009") keep their width; a lone "0" is not padding.
        key = (match.group(1), len(digits) if len(digits) > 1 and digits[0] == "0" else 0)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(match.group(2)))
    out: list[str] = []
    for prefix, width in order:
        numbers = sorted(set(groups[(prefix, width)]))
        spans: list[str] = []
        start = prev = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            lo, hi = f"{start:0{width}d}", f"{prev:0{width}d}"
            spans.append(lo if start == prev else f"{lo}-{hi}")
            if n is not None:
                start = prev = n
        if len(numbers) == 1:
            out.append(f"{prefix}{spans[0]}")
        else:
            out.append(f"{prefix}[{','.join(spans)}]")
    return ",".join(out + plain)
