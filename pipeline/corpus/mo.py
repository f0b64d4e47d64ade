"""Reader for gettext .mo catalogs (the binary table msgfmt writes; layout in Python's `gettext` docs)."""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

MAGIC_LE, MAGIC_BE = 0x950412DE, 0xDE120495


class MoEntry(NamedTuple):
    ctx: str | None  # msgctxt, stored before the msgid and a \x04
    msgid: str
    msgid_plural: str | None  # stored after the msgid and a \x00
    msgstr: tuple[str, ...]  # one string per plural form


def _charset(header: bytes) -> str:
    m = re.search(rb"charset=([\w.:-]+)", header)
    cs = m.group(1).decode("ascii") if m else "utf-8"
    try:
        "".encode(cs)
    except LookupError:  # "CHARSET" in templates, or a name Python does not know
        cs = "utf-8"
    return cs


def read_mo(data: bytes) -> list[MoEntry]:
    """All entries of a .mo file except the header (msgid ""). Raises ValueError if it is not one."""
    if len(data) < 20:
        raise ValueError("too short for a .mo file")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == MAGIC_LE:
        end = "<"
    elif magic == MAGIC_BE:
        end = ">"
    else:
        raise ValueError(f"bad .mo magic {magic:#x}")
    _rev, n, off_ids, off_strs = struct.unpack(end + "4I", data[4:20])
    raw = []
    for i in range(n):
        ilen, ioff = struct.unpack_from(end + "2I", data, off_ids + 8 * i)
        slen, soff = struct.unpack_from(end + "2I", data, off_strs + 8 * i)
        if ioff + ilen > len(data) or soff + slen > len(data):
            raise ValueError("truncated .mo file")
        raw.append((data[ioff : ioff + ilen], data[soff : soff + slen]))
    # the header (empty msgid, no context) carries the charset of every other entry
    header = next((s for k, s in raw if k == b""), b"")
    cs = _charset(header)
    out = []
    for k, s in raw:
        if k == b"":
            continue
        key, val = k.decode(cs, "replace"), s.decode(cs, "replace")
        ctx = None
        if "\x04" in key:
            ctx, key = key.split("\x04", 1)
        msgid, _, plural = key.partition("\x00")
        out.append(MoEntry(ctx, msgid, plural or None, tuple(val.split("\x00"))))
    return out
