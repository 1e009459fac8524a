"""Keyword blocklist, the guardrails' first text check (Cosmos-1.0-Guardrail's ``blocklist/``).

A prompt is blocked when, after folding it to ASCII, better_profanity (seeded with the ``custom``
word lists, minus the ``whitelist``) finds a listed word in it or in its lemmatised copy, or when a
phrase of an ``exact_match`` list occurs as whole words, or when a window of as many words (for a
single word: a word of four letters or more) nearly matches it (difflib ratio >= (n - 0.5) / n, n
the phrase's length).

Lemmas come from NLTK's WordNet lemmatiser over the WordNet data in the guardrail download
(``blocklist/nltk_data``), as in NVIDIA's code ("grenades" -> "grenade", "knives" -> "knife"). Words
WordNet does not know are also tried without a plural suffix, which can only block more.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import unicodedata
from typing import Iterable, List, Optional, Set

_WORD = re.compile(r"[a-z0-9']+")
log = logging.getLogger("nemo_cosmos")


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


class WordNetLemmas:
    """NLTK's WordNet lemmatiser (nouns, its default) over the WordNet corpus of a folder of
    nltk_data. The corpus is copied out first: NLTK >= 3.10.3 refuses data reached through symbolic
    links, which is how the Hugging Face cache stores it."""

    def __init__(self, nltk_data: str):
        import atexit
        import shutil
        import tempfile
        import warnings

        import nltk
        from nltk.stem import WordNetLemmatizer

        private = tempfile.mkdtemp(prefix="nemo_cosmos-nltk_data-")
        atexit.register(shutil.rmtree, private, True)
        for name in ("wordnet", "wordnet.zip"):
            src = os.path.join(nltk_data, "corpora", name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(private, "corpora", name))  # follows the links
            elif os.path.isfile(src):
                os.makedirs(os.path.join(private, "corpora"), exist_ok=True)
                shutil.copyfile(src, os.path.join(private, "corpora", name))
        nltk.data.path.insert(0, private)
        self._lemmatizer = WordNetLemmatizer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed
            self._lemmatizer.lemmatize("loads")  # the corpus, now (a missing one fails here)

    def __call__(self, word: str) -> str:
        return self._lemmatizer.lemmatize(word)


def singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    return word


class Blocklist:
    def __init__(self, custom: Iterable[str], exact: Iterable[str] = (), whitelist: Iterable[str] = (),
                 lemmas: Optional[WordNetLemmas] = None):
        from better_profanity import Profanity

        self.lemmas = lemmas
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
        nltk_data = os.path.join(folder, "nltk_data")
        corpora = os.path.join(nltk_data, "corpora")
        has_wordnet = any(os.path.exists(os.path.join(corpora, n)) for n in ("wordnet", "wordnet.zip"))
        lemmas = WordNetLemmas(nltk_data) if has_wordnet else None
        if lemmas is None:
            log.warning("%s has no nltk_data/corpora/wordnet: plurals are found by suffix rules only (download the guardrail "
                        "repository again for NVIDIA's WordNet lemmas)", folder)
        return cls(_read_lists(custom), _read_lists(os.path.join(folder, "exact_match")),
                   _read_lists(os.path.join(folder, "whitelist")), lemmas)

    def blocked(self, prompt: str) -> Optional[str]:
        """The reason a prompt is blocked, or None."""
        text = ascii_fold(prompt).lower().strip()
        if not text:
            return "the prompt is empty"
        words = [w for w in _WORD.findall(text) if w not in self.whitelist]
        lemma_words = [self._lemma(w) for w in words]
        lemma_text = " ".join(lemma_words)
        for candidate in (" ".join(words), lemma_text):
            if self.profanity.contains_profanity(candidate):
                return "the prompt contains a blocklisted word"
        for phrase, pattern in zip(self.exact, self._exact_res):
            if pattern.search(text) or pattern.search(lemma_text):
                return f"the prompt contains the blocked phrase {phrase!r}"
        for phrase in self.exact:
            k, n = len(phrase.split()), len(phrase)
            for seq in (words, lemma_words):
                for i in range(len(seq) - k + 1):
                    window = " ".join(seq[i:i + k])
                    if len(window) < 4:
                        continue
                    if difflib.SequenceMatcher(None, window, phrase).ratio() >= (n - 0.5) / n:
                        return f"the prompt contains words close to the blocked phrase {phrase!r}"
        return None

    def _lemma(self, word: str) -> str:
        lemma = self.lemmas(word) if self.lemmas is not None else word
        return lemma if lemma != word else singular(word)
