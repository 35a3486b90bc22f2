"""Text normalisation and tokenisation shared by indexing, querying and evaluation.

The keyword index and queries must use the same tokenizer: :class:`Tokenizer`
is built from the user dictionary stored in the index, never from global jieba
state.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

CJK = "\u4e00-\u9fff\u3400-\u4dbf"
_CJK_RE = re.compile(f"[{CJK}]")
_WS_RE = re.compile(r"\s+")
# Full-width ASCII letters and digits (U+FF10..FF5A) map to ASCII by a fixed offset.
_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)}
_FULLWIDTH.update({c: c - 0xFEE0 for c in range(0xFF21, 0xFF3B)})
_FULLWIDTH.update({c: c - 0xFEE0 for c in range(0xFF41, 0xFF5B)})
_FULLWIDTH.update({0x3000: 0x20, 0xFF05: 0x25, 0xFF0E: 0x2E})  # ideographic space, ％, ．


def normalize_width(text: str) -> str:
    """Map full-width ASCII letters/digits (and ％ ． and U+3000) to ASCII.

    Chinese punctuation such as ，。：is kept: NFKC would flatten it too.
    """
    return text.translate(_FULLWIDTH)


def match_key(text: str) -> str:
    """The form used to compare answers and evidence: NFKC, no whitespace, lower case."""
    return _WS_RE.sub("", unicodedata.normalize("NFKC", text)).lower()


def has_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


# Function words and punctuation carry no retrieval signal. This is a generic
# Chinese stop list, not tuned to any question.
STOPWORDS = frozenset(
    """的 了 是 在 和 与 及 以及 或 等 也 就 都 而 并 把 被 对 为 于 从 向 到 由 其 之 这 那 这个 那个
    这些 那些 一个 一种 有 没有 个 上 下 中 里 我 我们 你 你们 他 她 它 他们 她们 它们 吗 呢 吧 啊 呀
    哪 哪个 哪些 哪里 哪儿 什么 多少 几 何 何时 谁 怎么 怎样 如何 为什么 为何 是否 是不是 请问 请
    告诉 一下 哪一 哪家 哪位 多大 多长 多久 所 该 此 每 各 又 还 很 最 更 能 会 可以 可 要 将 已 已经
    着 过 给 让 使 通过 以 个 位 家 年 月 日""".split()
)
_EDGE_PARTICLES = "的了在与和是将把被对从向给及"
_LEADING_PARTICLES = "等个"
# Interrogative words say what is asked, not what to look for ("哪一年", "几位", "多少钱").
_INTERROGATIVE = re.compile(r"[哪几谁啥]|多少|什么|怎么|怎样|如何|为何|为什么|何时|何地|多长|多大|多久|多远|多高")
_TOKEN_OK = re.compile(f"[{CJK}A-Za-z0-9]")


def mine_user_words(texts: Sequence[str], min_count: int = 3, max_len: int = 6) -> list[str]:
    """Find corpus-specific words (names like 江东芯谷) for the jieba user dictionary.

    Two generic sources: terms quoted with “” 《》 「」, and CJK n-grams that occur
    at least ``min_count`` times and are free at both ends (high branching
    entropy on the left and the right), i.e. classic new-word discovery.
    """
    words: set[str] = set()
    for text in texts:
        for m in re.finditer(rf"[“《「]([{CJK}A-Za-z0-9]{{2,10}})[”》」]", text):
            words.add(m.group(1))
    left: dict[str, Counter[str]] = defaultdict(Counter)
    right: dict[str, Counter[str]] = defaultdict(Counter)
    counts: Counter[str] = Counter()
    for text in texts:
        for run in re.findall(f"[{CJK}]+", text):
            n = len(run)
            for size in range(3, max_len + 1):
                for i in range(0, n - size + 1):
                    gram = run[i : i + size]
                    counts[gram] += 1
                    left[gram][run[i - 1] if i > 0 else "^"] += 1
                    right[gram][run[i + size] if i + size < n else "$"] += 1

    def entropy(counter: Counter[str]) -> float:
        total = sum(counter.values())
        return -sum(c / total * math.log(c / total) for c in counter.values())

    # A gram that only ever occurs inside one longer word has zero entropy on
    # one side, so the entropy test also keeps the longest form.
    found = {
        g
        for g, c in counts.items()
        if c >= min_count and entropy(left[g]) >= 1.0 and entropy(right[g]) >= 1.0
    }
    # "在杭州医药港" / "大创小镇的": a particle glued to a word that was found on its own
    # would hide that word from BM25 wherever the particle precedes or follows it.
    particles = _EDGE_PARTICLES + "于"
    words.update(
        g
        for g in found
        if not (g[0] in particles and g[1:] in found) and not (g[-1] in particles and g[:-1] in found)
    )
    return sorted(words)


_PROPER_TAGS = frozenset({"ns", "nr", "nz", "nrt"})

# jieba's own dictionary does not depend on the index, so it is read once per process and
# shared: each index load (every hot reload) copies only the word table and adds its user
# words. Building it anew per load made a reloading server grow by tens of MB per reload:
# 350k freed strings leave the allocator's arenas fragmented rather than returned.
_base_lock = threading.Lock()
_base_freq: tuple[dict[str, int], int] | None = None
_base_proper: frozenset[str] | None = None


def _jieba_base() -> tuple[dict[str, int], int]:
    """jieba's prefix dictionary (word -> frequency) and total frequency, loaded once."""
    global _base_freq
    with _base_lock:
        if _base_freq is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tok = jieba.Tokenizer()
            tok.initialize()
            _base_freq = (tok.FREQ, tok.total)
        return _base_freq


def _proper_nouns() -> frozenset[str]:
    """Words jieba's dictionary tags as proper nouns (about 107k), read once.

    Only these tags are kept: jieba's whole tag table would cost the server some 90 MB.
    """
    global _base_proper
    with _base_lock:
        if _base_proper is None:
            import jieba

            with jieba.get_dict_file() as fh:
                rows = (line.decode("utf-8").split() for line in fh)
                _base_proper = frozenset(r[0] for r in rows if len(r) >= 3 and r[2] in _PROPER_TAGS)
        return _base_proper


class Tokenizer:
    """jieba tokenisation with a corpus user dictionary, for BM25 (build and query).

    The jieba dictionary loads lazily on first use (about a second), never at import.
    """

    def __init__(self, user_words: Iterable[str] = ()) -> None:
        self.user_words = tuple(user_words)
        self._user_set = frozenset(self.user_words)
        self._jieba = None
        self._proper: frozenset[str] | None = None

    def warm_up(self) -> None:
        if self._jieba is not None:
            return
        import jieba

        freq, total = _jieba_base()
        tok = jieba.Tokenizer()
        # The shared table's strings are reused; only the dict itself is new (user words go in it).
        tok.FREQ, tok.total, tok.initialized = dict(freq), total, True
        for word in self.user_words:
            tok.add_word(word, freq=max(tok.suggest_freq(word), 1000))
        self._jieba = tok

    def is_proper(self, word: str) -> bool:
        """Does jieba's dictionary tag ``word`` a proper noun (place, person, other name)?"""
        self.place_like("")
        return word in self._proper  # type: ignore[operator]

    def is_name(self, word: str) -> bool:
        """Is ``word`` a name: a corpus word (江东芯谷) or a proper noun by jieba's dictionary?"""
        return word in self._user_set or self.is_proper(word)

    def names_something(self, text: str) -> bool:
        """Does ``text`` end in a name (:meth:`is_name`)?"""
        words = [w for w, _ in self.terms(text)]
        return bool(words) and self.is_name(words[-1])

    def place_like(self, word: str) -> bool:
        """Could ``word`` be a name: jieba's dictionary tags it a proper noun (place, person,
        other name) or does not know it at all. Common words ("贫困", "搬进") are not."""
        if self._proper is None:
            self.warm_up()
            self._proper = _proper_nouns()
        if word in self._proper:
            return True
        return not self._jieba.FREQ.get(word)  # type: ignore[union-attr]

    def terms(self, text: str) -> list[tuple[str, tuple[str, ...]]]:
        """Whole words of a question (precise mode), each with its search-mode sub-words.

        Answer scoring matches these as substrings of a sentence, so a word
        counts whether or not the sentence was segmented the same way.
        """
        self.warm_up()
        text = normalize_width(text).lower()
        out = []
        seen = set()
        for word in self._jieba.lcut(text, HMM=True):  # type: ignore[union-attr]
            # HMM glues particles onto unknown words ("在杭州医药港", "中心的").
            word = word.strip()
            if len(word) > 2:
                word = word.strip(_EDGE_PARTICLES).lstrip(_LEADING_PARTICLES)
            if not word or word in seen or word in STOPWORDS or not _TOKEN_OK.search(word):
                continue
            if _INTERROGATIVE.search(word):
                continue
            seen.add(word)
            subs = tuple(
                t for t in self._jieba.cut_for_search(word, HMM=True)  # type: ignore[union-attr]
                if len(t) >= 2 and t != word and t not in STOPWORDS
            )
            out.append((word, subs))
        return out

    def tokenize(self, text: str) -> list[str]:
        """Search-mode tokens (whole words plus their dictionary sub-words), stop words removed."""
        self.warm_up()
        text = normalize_width(text).lower()
        out = []
        for token in self._jieba.cut_for_search(text, HMM=True):
            token = token.strip()
            if not token or token in STOPWORDS or not _TOKEN_OK.search(token):
                continue
            out.append(token)
            # HMM glues particles onto unknown words ("集聚了珉能科技" -> "了珉能"): index the bare word too.
            if len(token) > 2 and not self._jieba.FREQ.get(token):  # type: ignore[union-attr]
                bare = token.strip(_EDGE_PARTICLES)
                if bare != token and len(bare) >= 2:
                    out.append(bare)
        return out
