"""Cleaning rules: placeholders, accelerators, markup; the comparison key; the pair filter; extractors."""

import pytest

from pipeline.corpus.clean import PH, clean, keep_pair, norm_key
from pipeline.corpus.extract import (
    fortunes,
    html_segments,
    man_sections,
    pair_gimphelp,
    pair_lohelp,
    wiki_text,
)


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Could not open %s: %m", f"Could not open {PH}: {PH}"),
        ("Copy %1$s to %2$s", f"Copy {PH} to {PH}"),
        ("%(count)d items in %(name)s", f"{PH} items in {PH}"),
        ("Export the %PRODUCTNAME document", "Export the LibreOffice document"),
        ("Version %PRODUCTVERSION is here", f"Version {PH} is here"),
        ("Deleted {0} of {total} files", f"Deleted {PH} of {PH} files"),
        ("Set $HOME or ${XDG_DATA_HOME}", f"Set {PH} or {PH}"),
        ("Edited by $1", f"Edited by {PH}"),
        ("%s%s: unable to connect", f"{PH}: unable to connect"),
        ("100% done, %d%% left", f"100% done, {PH}% left"),
        ("At %L the %<BIND(C)%> is %qs", f"At {PH} the 'BIND(C)' is {PH}"),
    ],
)
def test_placeholders_become_one_neutral_token(raw, want):
    assert clean(raw) == want


@pytest.mark.parametrize(
    "raw, want",
    [
        ("_Save As…", "Save As..."),
        ("Save _As", "Save As"),
        ("Ope_n the file", "Open the file"),
        ("&File and &Edit", "File and Edit"),
        ("Tom && Jerry", "Tom & Jerry"),
        ("~Open the file", "Open the file"),
        ("Set LC_ALL first", "Set LC_ALL first"),  # an identifier, not a mnemonic
        ("use snake_case and other_names", "use snake_case and other_names"),
        ("Go to ~/.config now", "Go to ~/.config now"),
    ],
)
def test_accelerators(raw, want):
    assert clean(raw) == want


def test_markup_and_entities():
    assert clean("<b>Bold</b> and <span foreground='red'>red</span> &lt;tag&gt; &amp; more") == (
        "Bold and red <tag> & more"
    )
    assert clean("line one<br/>line two\n\tend") == "line one line two end"


def test_norm_key_ignores_case_placeholders_accelerators_punctuation():
    a = norm_key("Could not open _file “%s”.")
    assert (
        a == norm_key("could not open file {0}") == norm_key("COULD NOT OPEN FILE") == "could not open file"
    )
    assert norm_key("Text exit") == "text exit"  # words that hold an x are kept


def test_keep_pair():
    assert keep_pair("Could not open the file", "Die Datei konnte nicht geöffnet werden")
    assert not keep_pair("Open file", "Datei öffnen")  # fewer than 4 English words
    assert not keep_pair("Could not open the file", "Could not open the file.")  # untranslated
    assert not keep_pair("Could not open the file", "Die Datei konnte nicht geöffnet werden " * 5)  # ratio
    assert not keep_pair(
        "X X X / 1 2 3 4 5 6 7 8 9 0 = 4 ab cd ef gh", "X X X / 1 2 3 4 ab cd ef"
    )  # not text


def test_mediawiki_markup():
    s = "{{PLURAL:$1|One edit|$1 edits}} by [[User:Bob|Bob]] on '''[https://x.org the site]'''"
    assert clean(wiki_text(s)) == "One edit by Bob on the site"


def test_html_segments_and_help_pairing():
    en = {
        "p.html": html_segments(
            '<h1 id="hd_id1">Insert a table</h1><p id="par_id2">Choose <b>Table</b> - Insert a new table now.</p><p id="par_id3">Same text in every language here.</p>'
        )
    }
    de = {
        "p.html": html_segments(
            '<h1 id="hd_id1">Eine Tabelle einfügen</h1><p id="par_id3">Same text in every language here.</p><p id="par_id2">Wählen Sie <b>Tabelle</b> - Eine neue Tabelle einfügen.</p>'
        )
    }
    pairs, pages = pair_lohelp(en, de)
    assert pairs == [
        ("Choose Table - Insert a new table now.", "Wählen Sie Tabelle - Eine neue Tabelle einfügen.")
    ]
    assert "Same text" not in pages["p.html"]  # untranslated paragraphs are not German text
    # GIMP: by block order, tolerating an extra block
    en = {
        "g.html": html_segments(
            "<h2>The Blur filter</h2><p>This filter blurs the whole image.</p><p>Use it with care and patience.</p>"
        )
    }
    ro = {
        "g.html": html_segments(
            "<h2>Filtrul Blur</h2><div><p>Acest filtru estompează întreaga imagine.</p></div><p>Use it with care and patience.</p>"
        )
    }
    pairs, pages = pair_gimphelp(en, ro)
    assert pairs == [("This filter blurs the whole image.", "Acest filtru estompează întreaga imagine.")]
    assert "care" not in pages["g.html"]


def test_man_sections():
    page = r""".TH LS 1
.SH NAME
ls \- list directory contents
.SH DESCRIPTION
List information about the \fBFILEs\fR (the current directory by default).
Sort entries alphabetically.
.TP
\fB\-a\fR, \fB\-\-all\fR
do not ignore entries starting with .
.\" a comment
.SH "SEE ALSO"
.BR dir (1)
"""
    secs = man_sections(page)
    assert secs[0] == "ls - list directory contents"
    assert secs[1].splitlines()[0] == (
        "List information about the FILEs (the current directory by default). Sort entries alphabetically."
    )
    assert "-a, --all" in secs[1]
    assert len(secs) == 2  # "dir(1)" alone is too short to be a document


def test_fortunes():
    assert fortunes("Ein Spruch mit vielen Worten.\n%\nkurz\n%\nNoch ein Spruch\nüber zwei Zeilen.\n") == [
        "Ein Spruch mit vielen Worten.",
        "Noch ein Spruch\nüber zwei Zeilen.",
    ]
