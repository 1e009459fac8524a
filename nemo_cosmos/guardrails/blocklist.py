"""Keyword blocklist, the guardrails' first text check (Cosmos-1.0-Guardrail's ``blocklist/``).

A prompt is blocked when, after folding it to ASCII, better_profanity (seeded with the ``custom``
word lists, minus the ``whitelist``) finds a listed word in it or in a singularised copy of it, or
when a phrase of an ``exact_match`` list occurs as whole words, or when a word of four letters or
more nearly matches one of those (difflib ratio >= (n - 0.5) / n, n its length).

Differences from NVIDIA's: singular forms come from a few suffix rules instead of NLTK's WordNet
lemmatiser (whose corpus is a separate download).
"""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from typing import Iterable, List, Optional, Set

_WORD = re.compile(r"[a-z0-9']+")


def _read_lists(folder: str) -> List[str]:
    words = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="ignore") as f:
                words += [w.strip().lower() for w in f if w.strip() and not w.startswith("#")]
    return words


def ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    return word


class Blocklist:
    def __init__(self, custom: Iterable[str], exact: Iterable[str] = (), whitelist: Iterable[str] = ()):
        from better_profanity import Profanity

        self.whitelist: Set[str] = {w.lower() for w in whitelist}
        self.profanity = Profanity()
        self.profanity.load_censor_words(custom_words=[w for w in custom if w not in self.whitelist])
        self.exact = [p.lower() for p in exact if p.strip()]
        self._exact_res = [re.compile(r"\b" + re.escape(p) + r"\b") for p in self.exact]

    @classmethod
    def from_dir(cls, folder: str) -> "Blocklist":
        """``folder`` = the guardrail repository's ``blocklist/`` (sub-folders custom, exact_match, whitelist)."""
        custom = os.path.join(folder, "custom")
        if not os.path.isdir(custom):
            raise FileNotFoundError(f"blocklist word lists missing: {custom}")
        return cls(_read_lists(custom), _read_lists(os.path.join(folder, "exact_match")),
                   _read_lists(os.path.join(folder, "whitelist")))

    def blocked(self, prompt: str) -> Optional[str]:
        """The reason a prompt is blocked, or None."""
        text = ascii_fold(prompt).lower().strip()
        if not text:
            return "the prompt is empty"
        words = [w for w in _WORD.findall(text) if w not in self.whitelist]
        singular_text = " ".join(singular(w) for w in words)
        for candidate in (" ".join(words), singular_text):
            if self.profanity.contains_profanity(candidate):
                return "the prompt contains a blocklisted word"
        for phrase, pattern in zip(self.exact, self._exact_res):
            if pattern.search(text) or pattern.search(singular_text):
                return f"the prompt contains the blocked phrase {phrase!r}"
        for word in set(words):
            if len(word) < 4:
                continue
            for phrase in self.exact:
                if " " in phrase:
                    continue
                n = len(phrase)
                if difflib.SequenceMatcher(None, word, phrase).ratio() >= (n - 0.5) / n:
                    return f"the prompt contains a word close to the blocked word {phrase!r}"
        return None
