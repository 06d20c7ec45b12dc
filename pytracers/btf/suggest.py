"""Close matches for a mistyped name ("did you mean ...?").

:func:`_close_matches` gives exactly ``difflib.get_close_matches``'s answer over
the ~70,000 names of vmlinux in a few milliseconds; :func:`suggest` (the method
:meth:`Btf.suggest`, assigned in ``reader.py``) keeps a blob's names grouped by
length (:func:`_group_by_len`) per kind between calls.
"""
from __future__ import annotations

import heapq
import operator
from itertools import repeat
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import BadArgumentError
from .types import Kind, KindLike, _norm_kind

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Btf


def suggest(self: Btf, name: str, kind: Optional[KindLike] = "func", n: int = 5,
            cutoff: float = 0.6) -> List[str]:
    """Up to ``n`` names of ``kind`` close to ``name`` (difflib ratio >= cutoff)."""
    k = _norm_kind(kind)
    if k is None:
        k = Kind.FUNC
    names = self._name_list(k, True)
    key = (int(k), self.base is not None)
    by_len = self._names_by_len.get(key)
    if by_len is None:
        by_len = self._names_by_len[key] = _group_by_len(names)
    return _close_matches(name, names, n, cutoff, by_len)


_SUGGEST_POOL = 400
_SUGGEST_BUDGET = 3000


def _close_matches(word: str, names: Sequence[str], n: int, cutoff: float,
                   by_len: Optional[Dict[int, List[str]]] = None,
                   pool: int = _SUGGEST_POOL, budget: int = _SUGGEST_BUDGET) -> List[str]:
    """``difflib.get_close_matches(word, names, n, cutoff)``, made fast for ~70k names.

    difflib's score is ``ratio = 2*M/(la+lb)``, ``M`` the matched characters.
    Two exact bounds prune names that cannot reach the current bar:
    ``M <= min(la, lb)`` (whole length buckets), and ``M <= lb - u`` where ``u``
    counts characters of the name that never occur in ``word`` (one C-level
    ``str.translate`` per name).  Names are visited in order of growing length
    difference while a running top ``n`` is kept; once it is full its worst
    score becomes the bar, so the search usually ends early.  The result is
    then exactly difflib's.

    If more than ``budget`` names needed a difflib score (only a few good
    matches exist, so the bar stays low), the remaining candidates are cut to
    the ``pool`` that share the most character bigrams with ``word`` (C-level
    set operations) before scoring: the one approximate step.
    """
    if n <= 0 or not names:
        return []
    if not 0.0 <= cutoff <= 1.0:
        raise BadArgumentError(f"cutoff must be in [0.0, 1.0]: {cutoff!r}")
    if by_len is None:
        by_len = _group_by_len(names)
    la = len(word)
    drop: Dict[int, None] = {ord(c): None for c in set(word)}
    import difflib                      # only when suggesting
    sm = difflib.SequenceMatcher()
    sm.set_seq2(word)
    best: List[Tuple[float, str]] = []   # min-heap of (score, name), like nlargest's order
    bar = cutoff

    def len_bound(L: int) -> float:
        return 2.0 * min(la, L) / (la + L) if la + L else 1.0

    def candidates(bucket: List[str], L: int) -> Iterator[str]:
        limit = L - bar * (la + L) / 2.0   # most unmatchable chars a name may have
        for x, rest in zip(bucket, map(len, map(str.translate, bucket, repeat(drop)))):
            if rest <= limit:
                yield x

    def score(x: str) -> None:
        nonlocal bar
        sm.set_seq1(x)
        if sm.quick_ratio() < bar:
            return
        r = sm.ratio()
        if r < bar:
            return
        item = (r, x)
        if len(best) < n:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)
        else:
            return
        if len(best) == n:
            bar = max(cutoff, best[0][0])

    spent = 0
    maxlen = max(by_len) if by_len else 0
    exhausted = True
    done_lens: set[int] = set()
    for d in range(0, max(la, maxlen) + 1):
        lens = [L for L in ((la,) if d == 0 else (la - d, la + d)) if L >= 0]
        if max(len_bound(L) for L in lens) < bar:
            break
        for L in lens:
            bucket = by_len.get(L)
            if not bucket or len_bound(L) < bar:
                done_lens.add(L)
                continue
            todo = list(candidates(bucket, L))
            if spent + len(todo) > budget:
                exhausted = False
                break
            spent += len(todo)
            for x in todo:
                score(x)
            done_lens.add(L)
        if not exhausted:
            break
    if not exhausted:
        rest: List[str] = []
        for L, bucket in by_len.items():
            if L not in done_lens and len_bound(L) >= bar:
                rest.extend(candidates(bucket, L))
        if len(rest) > pool:
            wb = set(map(operator.add, word, word[1:]))
            tail = operator.itemgetter(slice(1, None))
            shared = map(len, map(wb.intersection, map(map, repeat(operator.add), rest,
                                                       map(tail, rest))))
            rest = [x for _, x in heapq.nlargest(pool, zip(shared, rest))]
        rest.sort(key=lambda x: abs(len(x) - la))
        for x in rest:
            if len_bound(len(x)) < bar:
                break
            score(x)
    return [x for _, x in sorted(best, reverse=True)]


def _group_by_len(names: Sequence[str]) -> Dict[int, List[str]]:
    out: Dict[int, List[str]] = {}
    for x in names:
        lst = out.get(len(x))
        if lst is None:
            out[len(x)] = [x]
        else:
            lst.append(x)
    return out
