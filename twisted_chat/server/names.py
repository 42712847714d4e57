"""Usernames: what a new account may be called, and how a typed name is compared.

A name is how users know who they talk to, so a new one must not be able to pass for
another: ``h\\u0430ns`` (with a Cyrillic a, U+0430) for ``hans``, ``1uke`` for ``luke``, a
name of invisible or blank characters (``\\u3164``, ``\\u2800``), or ``hans(private)``
and ``hans:``, which the client's own lines use as separators. Names are compared in
Unicode NFC, so ``jos\\u00e9`` and ``jose\\u0301`` are the same name.

Look-alikes are found with the Unicode confusables data (UTS #39) shipped by
``confusable_homoglyphs``: its script table decides whether a name mixes scripts, and
its confusable pairs give each character a *skeleton* (one representative of the
characters it can pass for). Two names with the same skeleton look alike. We use that
library rather than code of our own because the data is Unicode's, not ours to keep.

These rules bind *new* accounts. Names already in ``credentials.txt`` keep working
(the operator chose them); the file reader reports the ones these rules would refuse.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from twisted_chat import wire

SEPARATORS = frozenset(":()")
"""Characters the client's lines use around names (``luke: hi``, ``luke(private): hi``)."""

_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})

_DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
"""Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): drawn as
nothing, so a name holding one looks like a name without it. Among them the Hangul
fillers (U+115F, U+1160, U+3164, U+FFA0), which are letters yet blank."""

_BLANK_LOOKING = "\u2800\u3000\u2001\u2002\u2003"
"""Blank glyphs that are not spaces by category: BRAILLE PATTERN BLANK and wide spaces."""

_DRAWN_AS_NOTHING = re.compile(
    "["
    + "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _DEFAULT_IGNORABLE)
    + _BLANK_LOOKING
    + "]"
)

_TECHNICAL_BLOCKS = ((0x0250, 0x02FF), (0x1D00, 0x1DFF))
"""IPA Extensions, Spacing Modifier Letters, Phonetic Extensions (and their
supplement), Combining Diacritical Marks Supplement: phonetic notation, not the
letters of a language. UTS #39 gives them the Identifier_Type Technical, so their
Identifier_Status is Restricted: ``ʜᴀɴs`` in small capitals passes for ``hans`` with a
skeleton of its own. No package we can install ships IdentifierStatus.txt (PyICU
needs compiling against ICU), so the blocks are named here, with the letters of them
UTS #39 does allow (:data:`_ALLOWED_IN_TECHNICAL_BLOCKS`)."""

_ALLOWED_IN_TECHNICAL_BLOCKS = frozenset(
    "\u0253\u0254\u0256\u0257\u0259\u025b\u0263\u0268\u026f\u0272\u0289\u028b\u0292\u02bb\u02bc"
)
"""Letters of living languages in those blocks (open o, schwa, open e, gamma, the
hooked b and d, barred i and u and others, in African languages and Azerbaijani;
the Hawaiian okina U+02BB and the apostrophe letter U+02BC)."""

_MARKS = frozenset({"Mn", "Me"})
"""Marks drawn on the letter before them; a name that differs from another only by
them looks like it (``hans`` + U+0300). Spacing marks (Mc) take room of their own."""

_SCRIPT_NEUTRAL = frozenset({"COMMON", "INHERITED"})
_CJK_MIXES = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),  # Japanese
    frozenset({"HAN", "HANGUL"}),  # Korean
    frozenset({"HAN", "BOPOMOFO"}),  # Chinese with phonetic guides
)
"""Script mixes that are one writing system (UTS #39, "Highly Restrictive")."""


def normalise(name: str) -> str:
    """The form names are stored and compared in: NFC."""
    if unicodedata.is_normalized("NFC", name):
        return name  # nearly always: no copy
    return unicodedata.normalize("NFC", name)


def invisible_character(name: str) -> str | None:
    """The first character of ``name`` that draws as nothing or as blank space (a
    space, a control, a Default_Ignorable code point, a blank glyph), or None."""
    if name.isascii():  # nearly always: only the space and controls are invisible
        return next((c for c in name if not "!" <= c <= "~"), None)
    found = _DRAWN_AS_NOTHING.search(name)
    if found is not None:
        return found.group()
    return next((c for c in name if unicodedata.category(c) in _INVISIBLE_CATEGORIES), None)


def login_name_problem(name: str) -> str | None:
    """Why ``name`` cannot even be looked up (empty, too long, spaces or controls), or
    None. Every name in use passes this; :func:`new_name_problem` is stricter."""
    if not name:
        return "Error. The username is empty."
    if len(name) > wire.MAX_NAME_CHARS:
        return f"Error. A username has at most {wire.MAX_NAME_CHARS} characters."
    if not name.isprintable() or " " in name:
        return "Error. A username cannot contain spaces or control characters."
    return None


def new_name_problem(name: str) -> str | None:
    """Why no new account may be called ``name`` (already NFC), whatever other accounts
    exist, or None. :func:`skeleton` catches look-alikes of existing names."""
    invisible = invisible_character(name)
    if invisible is not None and invisible != " ":  # (spaces: login_name_problem says)
        return (
            "Error. A username cannot contain invisible or blank characters "
            f"(U+{ord(invisible):04X})."
        )
    problem = login_name_problem(name)
    if problem is not None:
        return problem
    if name != normalise(name):
        return "Error. The username is not in Unicode normal form (NFC)."
    if not SEPARATORS.isdisjoint(name):
        return "Error. A username cannot contain ':', '(' or ')'."
    if name.isascii():
        return None  # ASCII letters are all Latin, the rest is script-neutral
    if unicodedata.category(name[0]) in ("Mn", "Mc", "Me"):
        return "Error. A username cannot start with a combining mark."
    technical = _technical_character(name)
    if technical is not None:
        return (
            "Error. A username cannot contain phonetic or technical letters "
            f"(U+{ord(technical):04X}, such as small capitals): they pass for others."
        )
    scripts = _scripts(name)
    if len(scripts) > 1 and not any(scripts <= mix for mix in _CJK_MIXES):
        names = ", ".join(sorted(s.title() for s in scripts))
        return f"Error. A username must be written in one script, not several ({names})."
    return None


def _technical_character(name: str) -> str | None:
    for char in name:
        code = ord(char)
        technical = any(low <= code <= high for low, high in _TECHNICAL_BLOCKS)
        if technical and char not in _ALLOWED_IN_TECHNICAL_BLOCKS:
            return char
    return None


def skeleton(name: str) -> str:
    """What ``name`` looks like, the one way names are compared for look-alikes:
    compatibility-folded (NFKC), without the marks drawn on its letters, each
    character replaced by the representative of the characters it can be confused
    with, then case-folded and replaced again. Two names with the same skeleton can
    pass for each other (``hans``, ``h\\u0430ns``, ``Hans``, ``hans`` + U+0300;
    ``luke``, ``1uke``, ``Iuke``). Logins stay case-sensitive (the handout's rule):
    this only keeps a *new* ``Hans`` from passing for ``hans``."""
    folded = unicodedata.normalize("NFKC", name)
    if not folded.isascii():
        decomposed = unicodedata.normalize("NFD", folded)
        folded = "".join(c for c in decomposed if unicodedata.category(c) not in _MARKS)
    table = _representatives()
    return folded.translate(table).casefold().translate(table)


def _scripts(name: str) -> frozenset[str]:
    from confusable_homoglyphs import categories

    return frozenset(categories.unique_aliases(name)) - _SCRIPT_NEUTRAL


@cache
def _representatives() -> dict[int, str]:
    """Each confusable character's representative: the smallest character of its class
    under the confusable relation (pairs of single characters, joined transitively).
    Built once, on first use: about 8,000 pairs."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def root(char: str) -> str:
        while (up := parent.get(char, char)) != char:
            parent[char] = parent.get(up, up)  # path halving
            char = up
        return char

    for char, homoglyphs in confusables_data.items():
        if len(char) != 1:
            continue
        for homoglyph in homoglyphs:
            other = homoglyph["c"]
            if len(other) == 1:
                a, b = root(char), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    # As a str.translate table: code point -> representative.
    return {ord(char): root(char) for char in parent if root(char) != char}
