"""A generated section of a docs page: the text between a begin and an end marker, rewritten by one script.

The rest of the page (hand-written notes, other scripts' sections) is kept byte for byte.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, text: str, begin: str, end: str, *, append: bool = False) -> None:
    """Write ``text`` (which starts with ``begin`` and ends with ``end``) over the section of ``path``.

    Without the markers in ``path``: appended at the end when ``append``, else ``SystemExit`` naming them.
    """
    if not (text.lstrip("\n").startswith(begin) and text.rstrip("\n").endswith(end)):
        raise ValueError(f"replace_section: the text must start with {begin!r} and end with {end!r}")
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old[old.index(begin) :]:
        head, rest = old.split(begin, 1)
        path.write_text(head + text.rstrip("\n") + rest.split(end, 1)[1])
    elif append:
        path.write_text(old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "") + text)
    else:
        raise SystemExit(
            f"{path}: the markers of the generated section are missing ({begin!r} ... {end!r}); add them where the "
            "section belongs (or regenerate the whole page with its script)"
        )
