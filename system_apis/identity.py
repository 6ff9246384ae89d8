"""Names and email addresses as people read them: one normal form, no look-alike spoofing.

- Normalised with NFKC (a fullwidth letter is its ASCII one; ligatures are split), and an
  email address also lower-cased, before any duplicate check: what differs only in width or
  case is the same customer.
- Bidi controls (U+061C, U+200E/F, U+202A-E, U+2066-9) and other invisible format characters
  are refused: they reorder how a name or address is shown.
- Mixed scripts within one word are refused, as Unicode TR39's "highly restrictive" level
  defines it: every letter of a word from one script, or Latin with Han and Japanese kana,
  Han with Bopomofo, or Han with Hangul. "alice" spelt with a Cyrillic first letter is
  refused; a Cyrillic, Greek, Arabic or Chinese name in its own script is welcome. Words are
  split at spaces, an email address into its local part and each label of its domain.

The script of a character comes from ``confusable_homoglyphs.categories`` (Unicode's
Scripts.txt as a table of ranges); characters common to all scripts (digits, punctuation) and
combining marks inherit the word's script.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from confusable_homoglyphs import categories
from pydantic import AfterValidator, BeforeValidator, EmailStr

__all__ = ["EmailAddress", "PersonName", "identifier_problem", "normal_email", "normal_name"]

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_JOINERS = frozenset("\u200c\u200d")
"""Zero-width (non-)joiners: format characters some scripts need inside a word."""
_NEUTRAL = frozenset({"COMMON", "INHERITED"})
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


def _scripts(word: str) -> set[str]:
    if word.isascii():
        return {"LATIN"}  # the usual case, without a lookup per character
    return {categories.alias(ch) for ch in word} - _NEUTRAL


def _word_problem(word: str) -> str | None:
    scripts = _scripts(word)
    if len(scripts) <= 1 or any(scripts <= mix for mix in _ALLOWED_MIXES):
        return None
    return f"mixes scripts in one word ({', '.join(sorted(s.lower() for s in scripts))})"


def _format_problem(text: str) -> str | None:
    if text.isascii():
        return None
    for ch in text:
        if ch in BIDI_CONTROLS:
            return f"contains the bidi control U+{ord(ch):04X}"
        if ch not in _JOINERS and unicodedata.category(ch) == "Cf":
            return f"contains the invisible format character U+{ord(ch):04X}"
    return None


def identifier_problem(text: str, words: list[str]) -> str | None:
    """Why ``text`` (split into ``words``) is not a safe identifier or name, or None."""
    problem = _format_problem(text)
    if problem is None:
        for word in words:
            problem = _word_problem(word)
            if problem is not None:
                break
    return problem


def normal_name(value: str) -> str:
    """A person's or company's name in NFKC; ``ValueError`` if it could spoof another."""
    value = unicodedata.normalize("NFKC", value)
    problem = identifier_problem(value, value.split())
    if problem is not None:
        raise ValueError(problem)
    return value


def normal_email(value: str) -> str:
    """An email address in NFKC, lower-cased; ``ValueError`` if it could spoof another.

    Lower-cased rather than case-folded: ``casefold`` would also turn ``ß`` into ``ss``,
    another mailbox.
    """
    value = unicodedata.normalize("NFKC", value).lower()
    local, _, domain = value.rpartition("@")
    problem = identifier_problem(value, [local, *domain.split(".")])
    if problem is not None:
        raise ValueError(problem)
    return value


def _before_email(value: object) -> object:
    """``normal_email`` for a string; anything else is left to the type check (a 422)."""
    return normal_email(value) if isinstance(value, str) else value


PersonName = Annotated[str, AfterValidator(normal_name)]
"""A request model's name field: NFKC, no bidi controls, no mixed scripts in a word."""
EmailAddress = Annotated[EmailStr, BeforeValidator(_before_email)]
"""A request model's email field: normalised and free of look-alikes, then RFC syntax."""
