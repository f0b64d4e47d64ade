"""Normalisation of UI strings and prose, the filter for sentence-like pairs, and the comparison key.

Placeholders become one neutral token, PH ("X"), on both sides of a pair: removing them breaks the grammar
("%d files" -> "files"), keeping them raw teaches the model printf syntax. LibreOffice's %PRODUCTNAME is the
one placeholder whose value is known; it becomes "LibreOffice", as the program shows it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

PH = "X"

_PRODUCT = re.compile(r"%PRODUCTNAME|\$\[officename\]")
# one alternation, tried left to right at each position: the specific forms before the general ones
_PLACEHOLDER = re.compile(
    "|".join(
        [
            r"%[A-Z][A-Z_]{2,}%?|\$\[[a-z]+\]",  # LibreOffice %PRODUCTVERSION, $[officeversion]
            r"%\([^)\s]+\)[-+#0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]",  # python %(name)s
            r"%(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|Z|t|w|I64|I32)?"
            r"(?:<PRI[a-zA-Z0-9]+>|[A-Za-z@])",  # printf, %1$s, gettext's <PRIu64>, gcc's %qs %L %D
            r"%\d+|%\{[\w.-]+\}",  # Qt %1, ruby/perl %{name}
            r"\$\{[\w.-]+\}|\$\([\w.-]+\)|\$[A-Za-z_]\w*|\$\d+",  # shell $VAR ${VAR}, MediaWiki $1
            r"\{\{[^{}]*\}\}|\{[\w.:-]*\}",  # {{...}}, python/.NET {0} {name} {}
            r"@[A-Z][A-Z0-9_]+@",  # autoconf @VAR@
        ]
    )
)
_GCC_QUOTE = re.compile(r"%[<>]")
_PH_RUN = re.compile("\x03+")
_TAG = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")
_AMP_ACCEL = re.compile(r"&(?=[^\W_])(?![A-Za-z]+;|#\d+;|#[xX][0-9a-fA-F]+;)")
_TILDE_ACCEL = re.compile(r"~(?=[^\W_])")
_IDENT = re.compile(r"[A-Z0-9]+_[A-Z0-9_]*|.*[/.=-].*")  # LC_ALL, file_name.txt, --foo_bar: not mnemonics
_WS = re.compile(r"\s+")
_BR = re.compile(r"<br\s*/?>", re.I)
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")

MIN_MONO_WORDS = 3  # a catalog string or help block shorter than this is a label, not text


def _strip_underscore_accel(s: str) -> str:
    # GTK marks one mnemonic per string with "_"; a string with several underscores holds identifiers
    if s.count("_") != 1:
        return s
    i = s.index("_")
    if i + 1 >= len(s) or not (s[i + 1].isalnum()):
        return s
    tok = next(t for t in s.split() if "_" in t) if s.split() else ""
    if _IDENT.fullmatch(tok.strip("\"'()[]«»„“”‘’,:;!?")):
        return s
    return s[:i] + s[i + 1 :]


@lru_cache(maxsize=1 << 18)  # msgids repeat across the de/fr/ro catalogs of a package
def clean(s: str) -> str:
    """One UI string or help paragraph -> plain text on one line."""
    s = unicodedata.normalize("NFKC", s)
    if "<" in s:
        s = _TAG.sub("", _BR.sub(" ", s))
    if "&" in s:
        s = s.replace("&&", "\x01")  # Qt's escaped ampersand
        s = html.unescape(_AMP_ACCEL.sub("", s)).replace("\x01", "&")
    if "%" in s or "$" in s or "{" in s or "@" in s:
        s = s.replace("%%", "\x02")  # a literal percent sign
        s = _GCC_QUOTE.sub("'", s)  # gcc's %< %> quote marks
        s = _PLACEHOLDER.sub("\x03", _PRODUCT.sub("LibreOffice", s)).replace("\x02", "%")
        s = _PH_RUN.sub(PH, s)  # "%s%s" is one placeholder, not "XX"
    if "~" in s:
        s = _TILDE_ACCEL.sub("", s)
    if "_" in s:
        s = _strip_underscore_accel(s)
    return _WS.sub(" ", _CTRL.sub(" ", s)).strip()


def clean_prose(s: str) -> str:
    """Monolingual prose (man pages, help pages, fortunes): keep the text, tidy the whitespace, one paragraph a line."""
    s = unicodedata.normalize("NFKC", s)
    s = _CTRL.sub(lambda m: "\n" if m.group() in "\u2028\u2029" else " ", s.replace("\t", " "))
    lines = (re.sub(r"[ \u00a0]+", " ", ln).strip() for ln in s.split("\n"))
    return "\n".join(ln for ln in lines if ln)


_NONWORD = re.compile(r"\W+")
_XTOK = re.compile(r"(?:^| )x(?= |$)")  # the placeholder token
_SPECIAL = re.compile(r"[<&%$~_{@\x00-\x1f]")  # strings without these are their own clean() up to the key


def norm_key(s: str) -> str:
    """Comparison key for overlap removal: case, whitespace, placeholders, accelerators, markup and all
    punctuation ignored, so "Could not open _file %s." and "could not open file “{0}”" are one sentence."""
    return key(quick_clean(s))


def quick_clean(s: str) -> str:
    """clean(s), skipped for strings with nothing to clean (up to what key() ignores anyway)."""
    return clean(s) if _SPECIAL.search(s) else s


def key(cleaned: str) -> str:
    """norm_key of a string that has been through clean() already."""
    if not cleaned.isascii():
        cleaned = unicodedata.normalize("NFKC", cleaned)
    k = _NONWORD.sub(" ", cleaned.casefold())
    return _XTOK.sub("", k).strip() if "x" in k else k.strip()


_LETTERS = re.compile(r"[^\W\d_]")
_LETTER_WORD = re.compile(r"\S*[^\W\d_]\S*")


def n_words(s: str) -> int:
    """Words that hold a letter; the placeholder token does not count."""
    ws = _LETTER_WORD.findall(s)
    return len(ws) - ws.count(PH) if PH in s else len(ws)


_CODE = re.compile(r"\t|\S {3,}\S|^\s*--?[A-Za-z]", re.M)


def looks_like_code(raw: str) -> bool:
    """Option tables and command lines from --help output, tab-separated columns."""
    return bool(_CODE.search(raw))


def keep_pair(en: str, tgt: str, min_words: int = 4, max_words: int = 150, max_ratio: float = 2.5) -> bool:
    """A cleaned pair worth keeping: sentence-like English side, translated, sane length ratio."""
    if not en or not tgt or key(en) == key(tgt):
        return False  # untranslated (msgstr == msgid up to case, markup, punctuation)
    nw = n_words(en)
    if nw < min_words or nw > max_words:
        return False
    a, b = len(en), len(tgt)
    if max(a, b) > max_ratio * min(a, b) + 10:
        return False
    return len(_LETTERS.findall(en)) >= 0.5 * (len(en) - en.count(" "))
