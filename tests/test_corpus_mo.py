"""The .mo reader against catalogs written here with the layout of GNU msgfmt (see Python's gettext docs)."""

import struct

import pytest

from pipeline.corpus.extract import catalog
from pipeline.corpus.mo import read_mo


def write_mo(entries: dict[bytes, bytes], big_endian: bool = False) -> bytes:
    """A minimal .mo: magic, revision, N, offset of the key table, offset of the value table, then the strings."""
    e = ">" if big_endian else "<"
    keys = sorted(entries)
    n = len(keys)
    ktab, vtab = 28, 28 + 8 * n
    data = 28 + 16 * n
    kinfo, vinfo, blob = [], [], b""
    for k in keys:
        kinfo.append((len(k), data + len(blob)))
        blob += k + b"\0"
    for k in keys:
        v = entries[k]
        vinfo.append((len(v), data + len(blob)))
        blob += v + b"\0"
    head = struct.pack(e + "7I", 0x950412DE, 0, n, ktab, vtab, 0, 0)
    tabs = b"".join(struct.pack(e + "2I", *x) for x in kinfo) + b"".join(
        struct.pack(e + "2I", *x) for x in vinfo
    )
    return head + tabs + blob


HEADER_L1 = b"Content-Type: text/plain; charset=ISO-8859-1\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


@pytest.mark.parametrize("big_endian", [False, True])
def test_read_mo_context_plural_and_latin1(big_endian):
    mo = write_mo(
        {
            b"": HEADER_L1,
            b"Open file": "Datei öffnen".encode("latin-1"),
            b"menu\x04Quit": b"Beenden",
            b"%d file\x00%d files": "%d Datei\x00%d Dateien".encode("latin-1"),
        },
        big_endian,
    )
    got = {(e.ctx, e.msgid): e for e in read_mo(mo)}
    assert len(got) == 3  # the header entry is not returned
    assert got[None, "Open file"].msgstr == ("Datei öffnen",)
    assert got["menu", "Quit"].msgstr == ("Beenden",)
    pl = got[None, "%d file"]
    assert pl.msgid_plural == "%d files" and pl.msgstr == ("%d Datei", "%d Dateien")


def test_read_mo_rejects_garbage():
    with pytest.raises(ValueError):
        read_mo(b"not a catalog at all, no")


def test_catalog_pairs_take_first_plural_form_and_skip_untranslated():
    mo = write_mo(
        {
            b"": b"Content-Type: text/plain; charset=UTF-8\n",
            b"Could not open the file %s for reading": "Die Datei %s konnte nicht zum Lesen geöffnet werden".encode(),
            b"This string was never translated here": b"",
            b"This string is the same in both": b"This string is the same in both",
            b"ctx\x04Save the _document before closing": "_Dokument vor dem Schließen speichern".encode(),
            b"%d file was removed from disk\x00%d files were removed from disk": (
                b"%d Datei wurde entfernt\x00%d Dateien wurden entfernt"
            ),
            b"Quit": b"Beenden",  # a label: too short to be a pair
        }
    )
    en, de = {}, {}
    pairs = dict(catalog(mo, "de", en, de))
    assert pairs == {
        "Could not open the file X for reading": "Die Datei X konnte nicht zum Lesen geöffnet werden",
        "Save the document before closing": "Dokument vor dem Schließen speichern",
        "X file was removed from disk": "X Datei wurde entfernt",
    }
    assert "This string was never translated here" in en  # English text is English text
    assert "This string is the same in both" not in de  # untranslated strings are not German
