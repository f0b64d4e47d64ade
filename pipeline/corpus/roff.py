"""Man pages (roff, man and mdoc macros) to plain text sections: the escapes, fonts and macros a manual's
prose uses, with the markup and the code-like lines dropped."""

from __future__ import annotations

import re
import unicodedata

from .clean import MIN_MONO_WORDS, clean_prose, n_words

_ROFF_CHARS = {
    "em": "—",
    "en": "–",
    "bu": "•",
    "aq": "'",
    "dq": '"',
    "lq": "“",
    "rq": "”",
    "oq": "‘",
    "cq": "’",
    "co": "©",
    "rg": "®",
    "tm": "™",
    "mu": "×",
    "hy": "-",
    "ti": "~",
    "ha": "^",
    "ga": "`",
    "at": "@",
    ">=": "≥",
    "<=": "≤",
    "!=": "≠",
    "->": "→",
    "<-": "←",
    "de": "°",
    "Fo": "«",
    "Fc": "»",
    "fo": "‹",
    "fc": "›",
    "ss": "ß",
    "rs": "\\",
    "sl": "/",
    "pl": "+",
    "mi": "-",
    "eq": "=",
    "lB": "[",
    "rB": "]",
    "lC": "{",
    "rC": "}",
    "ba": "|",
    "or": "|",
    "sh": "#",
    "Do": "$",
    "ct": "¢",
    "Eu": "€",
    "eu": "€",
}
_ACCENTS = {":": "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", ",": "\u0327", "~": "\u0303"}
_STRINGS = {"lq": "“", "rq": "”", "R": "®", "Tm": "™", "aq": "'"}


def _special(name: str) -> str:
    if name in _ROFF_CHARS:
        return _ROFF_CHARS[name]
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    m = re.fullmatch(r"u([0-9A-Fa-f]{4,6})(?:_.*)?", name)
    return chr(int(m.group(1), 16)) if m else ""


_ESC = re.compile(
    r"\\(?:\((..)|\[([^\]]*)\]|\*(?:\((..)|\[([^\]]*)\]|(.))|f(?:\(..|\[[^\]]*\]|.)|s[-+]?(?:\d+|\(\d+|\[[^\]]*\])"
    r"|[hvwoXlLDbxNRCS]'[^']*'|n(?:\(..|\[[^\]]*\]|.)|(.))"
)


def roff_inline(s: str) -> str:
    def rep(m: re.Match) -> str:
        ch, br, s2, s3, s1, other = m.groups()
        if ch or br is not None:
            return _special(ch or br)
        if s2 or s3 or s1:
            return _STRINGS.get(s2 or s3 or s1, "")
        if other is None:
            return ""  # fonts, sizes, motions, registers
        return {
            "-": "-",
            "e": "\\",
            "\\": "\\",
            " ": " ",
            "~": " ",
            "0": " ",
            "'": "'",
            "`": "`",
            ".": ".",
            "t": " ",
        }.get(other, "")  # \& \| \^ \c \% \: vanish

    return _ESC.sub(rep, s)


_FONT_MACROS = {"B", "I", "SM", "SB"}
_ALT_MACROS = {"BI", "IB", "BR", "RB", "IR", "RI"}
_BREAKS = {
    "PP",
    "P",
    "LP",
    "TP",
    "IP",
    "HP",
    "sp",
    "br",
    "Pp",
    "Bl",
    "El",
    "It",
    "Bd",
    "Ed",
    "RS",
    "RE",
    "nf",
    "fi",
    "TQ",
    "EX",
    "EE",
    "in",
    "ti",
    "Dl",
    "D1",
    "Lp",
    "SY",
    "YS",
    "OP",
    "UR",
    "UE",
    "MT",
    "ME",
}
_MDOC = {
    "Nm",
    "Nd",
    "Ar",
    "Fl",
    "Cm",
    "Pa",
    "Xr",
    "Em",
    "Sy",
    "Va",
    "Ev",
    "Dq",
    "Sq",
    "Ql",
    "Li",
    "Ic",
    "Op",
    "Ft",
    "Fn",
    "Fa",
    "Fo",
    "Fc",
    "Dv",
    "Er",
    "St",
    "Lb",
    "In",
    "Aq",
    "Pq",
    "Ns",
    "No",
    "Bq",
    "Brq",
    "Ta",
    "Oo",
    "Oc",
    "Qq",
    "Qo",
    "Qc",
    "Dx",
    "Fx",
    "Nx",
    "Ox",
    "Bx",
    "Ux",
    "At",
    "An",
    "Lk",
    "Mt",
    "Ms",
    "Tn",
    "Ad",
    "Cd",
    "Vt",
    "Ot",
    "Ai",
    "Xo",
    "Xc",
    "Pf",
    "Sx",
    "Ap",
    "Do",
    "Dc",
    "Po",
    "Pc",
    "So",
    "Sc",
    "Bo",
    "Bc",
}


def _args(s: str) -> list[str]:
    return [a[1:-1] if len(a) > 1 and a[0] == '"' == a[-1] else a for a in re.findall(r'"[^"]*"|\S+', s)]


def man_sections(text: str) -> list[str]:
    """A man page (man or mdoc macros) -> one document per section, paragraphs one a line."""
    sections: list[list[str]] = []
    para: list[str] = []
    cur: list[str] | None = None
    skip_until_dots = False

    def brk() -> None:
        if para and cur is not None:
            cur.append(" ".join(para))
        para.clear()

    for line in text.split("\n"):
        if skip_until_dots:
            skip_until_dots = not line.startswith("..")
            continue
        if line.startswith(('.\\"', "'\\\"", '.\\"', '\\"')) or line.strip() in (".", "'"):
            continue
        if line[:1] in ".'":
            m = re.match(r"[.']\s*(\S+)\s*(.*)", line)
            if not m:
                continue
            mac, rest = m.group(1), m.group(2)
            if mac in ("de", "de1", "am", "ig"):
                skip_until_dots = True
            elif mac in ("SH", "Sh"):
                brk()
                cur = []
                sections.append(cur)
            elif mac in ("SS", "Ss"):
                brk()
                para.append(roff_inline(" ".join(_args(rest))))
                brk()
            elif mac in _BREAKS:
                brk()
                if mac == "IP" and rest:
                    a = _args(rest)
                    if a and a[0] not in ("\\(bu", "\\[bu]", "-", "*", "\\-") and len(a[0]) > 1:
                        para.append(roff_inline(a[0]))
                        brk()
            elif mac in _FONT_MACROS:
                para.append(roff_inline(" ".join(_args(rest))))
            elif mac in _ALT_MACROS:
                para.append(roff_inline("".join(_args(rest))))
            elif mac in _MDOC:
                words, prev = [], mac
                for a in _args(rest):
                    if a in _MDOC:
                        prev = a
                        continue
                    words.append(("-" + a) if prev == "Fl" else a)
                    prev = ""
                if words:
                    para.append(roff_inline(" ".join(words)))
            continue  # every other request (.TH, .if, .ds, .nr, .so, ...) carries no prose
        if line.strip():
            para.append(roff_inline(line.strip()))
        else:
            brk()
    brk()
    out = []
    for sec in sections:
        doc = clean_prose("\n".join(sec))
        if n_words(doc) >= MIN_MONO_WORDS:
            out.append(doc)
    return out
