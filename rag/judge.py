"""The judge stage: the one place that decides to answer or abstain.

Owns the signals read for that decision (the reader's scores and margins,
retrieval scores and gaps, the value, year and place checks, the trained
reader's probability when one runs), the small logistic model over them that
turns them into P(the answer is right), its file (``models/judge.json``:
weights, threshold, what it was fitted on, cross-validated figures) and its
fitting (``rag judge fit``, on the dev split only, with cross-validation).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag import lang
from rag.aliases import with_aliases
from rag.reader import group_text
from rag.text import match_key, normalize_width
from rag.types import (
    NOTHING_ASKED_REASON,
    SMALL_TALK_REASON,
    Candidate,
    Hit,
    Query,
    Sentence,
    Verdict,
)

if TYPE_CHECKING:
    from rag.index import IndexData

JUDGE_FORMAT = 1
DEFAULT_JUDGE = Path(__file__).resolve().parent.parent / "models" / "judge.json"
DEFAULT_JUDGE_MODEL_READER = DEFAULT_JUDGE.with_name("judge-reader.json")  # for RAG_READER=model
# Signals from the rules alone; the trained reader adds MODEL_FEATURES.
RULE_FEATURES = (
    "confidence_rules", "best_score", "margin", "best_dense", "best_coverage", "value_miss", "asks_value",
    "year_conflict", "unknown_place", "top_hit", "hit_gap", "keyword_top", "dense_top",
    "asks_entity", "has_lead", "person_miss", "zone_miss",
    # value_miss split by the kind of value asked: a missing date is a surer sign than a
    # missing count (counts are written in more ways than the patterns know).
    "unit_miss", "date_miss", "number_miss", "missing_word", "money_miss",
    # value_miss of the sentence the reader ranks first when it does not look for the asked
    # attribute: a near-miss's own subject sentence lacks the value, while the attribute can
    # lead the reader to a sentence stating it of something else (a sibling's figure).
    "plain_value_miss",
    "rival_name",
)
MODEL_FEATURES = ("model_best", "model_max")
# Candidate signal sets, from few to all; `rag judge fit` keeps the one whose cross-validated
# dev predictions decline the most unanswerable questions within the false-abstention budget
# (the dev split is small: fewer signals can generalise better).
FEATURE_SETS = {
    "core": ("confidence_rules", "value_miss", "unknown_place", "year_conflict", "person_miss", "zone_miss"),
    "compact": ("confidence_rules", "margin", "best_score", "value_miss", "unknown_place", "year_conflict",
                "person_miss", "zone_miss", "asks_entity", "asks_value", "top_hit"),
    "split": ("confidence_rules", "unit_miss", "money_miss", "date_miss", "number_miss", "missing_word",
              "unknown_place", "year_conflict", "person_miss", "zone_miss", "plain_value_miss", "rival_name"),
    "all": RULE_FEATURES,
}


class JudgeError(RuntimeError):
    """The judge's model file is missing, damaged or does not fit the pipeline."""


@dataclass(frozen=True, slots=True)
class JudgeModel:
    """A fitted logistic model: standardised features -> P(answer right)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float  # on the calibrated scale
    info: dict[str, Any]
    # Slope and offset on the log-odds, fitted on questions nothing else was fitted on (`rag
    # judge fit --calibration`): the dev split the judge learns from is where the rules grew,
    # so a judge fitted there can be surer than answers to new questions are right.
    calibration: tuple[float, float] = (1.0, 0.0)

    def log_odds(self, values: dict[str, float]) -> float:
        """The fitted model's log-odds that the answer is right, before calibration."""
        z = self.intercept
        for name, m, s, c in zip(self.features, self.mean, self.scale, self.coef, strict=True):
            z += c * (values[name] - m) / s
        return z

    def probability(self, values: dict[str, float]) -> float:
        return calibrated(self.log_odds(values), self.calibration)

    def calibrated_by(self, calibration: tuple[float, float]) -> JudgeModel:
        """This model with ``calibration`` in place of its own, the threshold carried to the new
        scale so that every decision stays as it was."""
        p = min(max(self.threshold, 1e-12), 1 - 1e-12)
        fitted = (math.log(p / (1 - p)) - self.calibration[1]) / self.calibration[0]
        return replace(self, calibration=calibration, threshold=calibrated(fitted, calibration))

    @classmethod
    def load(cls, path: Path) -> JudgeModel:
        """Read a judge file.

        Raises:
            JudgeError: missing, unreadable or of another format; the message says how to rebuild it.
        """
        fix = f"Run `rag judge fit --out {path}` to fit it again on the dev split."
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise JudgeError(f"Judge model not found: {path}. {fix}") from exc
        except (OSError, ValueError) as exc:
            raise JudgeError(f"Judge model {path} cannot be read ({exc}). {fix}") from exc
        if raw.get("format") != JUDGE_FORMAT:
            raise JudgeError(f"Judge model {path} has format {raw.get('format')!r}, expected {JUDGE_FORMAT}. {fix}")
        try:
            features = tuple(raw["features"])
            unknown = set(features) - set(RULE_FEATURES) - set(MODEL_FEATURES)
            if unknown:
                raise JudgeError(f"Judge model {path} reads unknown signals {sorted(unknown)}. {fix}")
            slope, offset = raw.get("calibration", (1.0, 0.0))
            model = cls(features, tuple(raw["mean"]), tuple(raw["scale"]), tuple(raw["coef"]),
                        float(raw["intercept"]), float(raw["threshold"]), dict(raw.get("info", {})),
                        (float(slope), float(offset)))
        except (KeyError, TypeError, ValueError) as exc:
            raise JudgeError(f"Judge model {path} is damaged ({exc}). {fix}") from exc
        if not len(model.features) == len(model.mean) == len(model.scale) == len(model.coef):
            raise JudgeError(f"Judge model {path} is damaged (lengths differ). {fix}")
        return model

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": JUDGE_FORMAT, "features": list(self.features), "mean": list(self.mean),
            "scale": list(self.scale), "coef": list(self.coef), "intercept": self.intercept,
            "threshold": self.threshold, "calibration": list(self.calibration), "info": self.info,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Where the judge's model lives, and an optional threshold override (None: the fitted one)."""

    path: Path = DEFAULT_JUDGE
    threshold: float | None = None


class Judge:
    """Decides to answer or abstain. Light ``__init__``; :meth:`warm_up` reads the model file."""

    def __init__(self, data: IndexData, config: JudgeConfig | None = None) -> None:
        self.data = data
        self.config = config or JudgeConfig()
        self.model: JudgeModel | None = None

    def warm_up(self) -> None:
        if self.model is None:
            self.model = JudgeModel.load(self.config.path)
        self.data.tokenizer.place_like("")  # load jieba's proper-noun list now, not in the first request
        self.data.articles_key  # noqa: B018 - and join the articles' text now, for the same reason

    @property
    def threshold(self) -> float:
        if self.config.threshold is not None:
            return self.config.threshold
        if self.model is None:
            self.warm_up()
        assert self.model is not None
        return self.model.threshold

    @staticmethod
    def asks_nothing(query: Query) -> Verdict | None:
        """The verdict on a turn that asks nothing of the articles (a greeting, or no word to
        look up), decided before anything is retrieved; None for a question. Such a turn has no
        right answer, whatever the closest sentence scores ("你好" matches "你好吗？” ...)."""
        if lang.small_talk(query.text) or lang.small_talk(query.asked):
            return Verdict(False, 0.0, {}, SMALL_TALK_REASON)
        if not query.terms:
            return Verdict(False, 0.0, {}, NOTHING_ASKED_REASON)
        return None

    def judge(
        self, query: Query, hits: Sequence[Hit], candidates: Sequence[Candidate],
        chosen: Sequence[tuple[Sequence[Sentence], Candidate]], lead: str | None = None,
    ) -> Verdict:
        """P(the answer built from ``chosen`` is right), and whether to give it.

        ``lead`` is the value or name the writer found for the question in the cited
        sentence (None when it found none): a sentence that states what was asked.
        """
        if not candidates or not chosen:
            return Verdict(False, 0.0, {}, "nothing retrieved")
        if self.model is None:
            self.warm_up()
        assert self.model is not None
        values = self.signals(query, hits, candidates, chosen, lead)
        missing = [f for f in self.model.features if f not in values]
        if missing:
            raise JudgeError(
                f"The judge model {self.config.path} reads {missing}, which this pipeline does not compute: "
                "set RAG_READER=model, or fit a judge for the rules reader with `rag judge fit`."
            )
        p = self.model.probability(values)
        answer = p >= self.threshold
        reason = "" if answer else self._reason(values)
        return Verdict(answer, p, values, reason)

    @staticmethod
    def _reason(values: dict[str, float]) -> str:
        if values.get("unknown_place"):
            return "the place asked about is not in the sources"
        if values.get("value_miss"):
            return "the closest sentence states no value of the kind asked for"
        if values.get("year_conflict"):
            return "the closest sentence is about another year, edition or level"
        if values.get("missing_word", 0.0) >= 0.9:
            return "the closest passage never mentions a word the question asks about"
        return "no sentence answers the question with enough confidence"

    def signals(
        self, query: Query, hits: Sequence[Hit], candidates: Sequence[Candidate],
        chosen: Sequence[tuple[Sequence[Sentence], Candidate]], lead: str | None = None,
    ) -> dict[str, float]:
        """Every signal the judge can read, by name."""
        best = candidates[0]
        # How far the best stands above the next sentence outside its own span, whatever else
        # the answer cites beside it (the pick of a second sentence is the writer's business).
        used = {s.sent_id for s in chosen[0][0]}
        rest = next((c.score for c in candidates if c.sentence.sent_id not in used), 0.0)
        margin = best.score - rest
        best_text = group_text(chosen[0])
        check = lang.value_check(query.text)
        value_miss = lang.lacks_value(check, best_text)
        kind = check.kind if check is not None and value_miss else ""
        out = {
            # The score the rules thresholded before the judge existed.
            "confidence_rules": max(best.dense, best.context_dense) + margin,
            "best_score": best.score,
            "margin": margin,
            "best_dense": max(best.dense, best.context_dense),
            "best_coverage": best.coverage,
            "value_miss": float(value_miss),
            "plain_value_miss": float(lang.lacks_value(check, max(candidates, key=lambda c: c.plain_score).sentence.text)),
            "unit_miss": float(kind == "unit"),
            "money_miss": float(kind == "money"),
            "date_miss": float(kind == "date"),
            "number_miss": float(kind in ("number", "rate", "ordinal")),
            "missing_word": self.missing_word(query, best.hit),
            "asks_value": float(check is not None),
            "year_conflict": float(lang.year_conflict(query.text, best_text)),
            "unknown_place": float(self.unknown_place(query) is not None),
            "top_hit": hits[0].score if hits else 0.0,
            "hit_gap": hits[0].score - hits[1].score if len(hits) > 1 else hits[0].score if hits else 0.0,
            "keyword_top": float(best.hit.keyword_rank == 1),
            "dense_top": float(best.hit.dense_rank == 1),
            "asks_entity": float(check is None and bool(lang.ASKS_ENTITY.search(query.text))),
            "has_lead": float(bool(lead)),
            # Asks who, and the cited sentence names nobody who answers (lang.person_missing).
            "person_miss": float(lang.person_missing(query.text, best_text)),
            # Asks about a zone the cited passage never names ("永康经济开发区" answered from 路桥's).
            "zone_miss": float(self._zone_miss(query.text, best.hit.chunk.title + best.hit.chunk.text + best_text)),
            # The cited sentence names another thing of the kind asked about (文教馆 for 游泳馆).
            "rival_name": float(lang.names_a_rival(normalize_width(query.text), normalize_width(best_text),
                                                   self._names_something)),
        }
        scored = [c.model_score for c in candidates if c.model_score is not None]
        if scored:
            out["model_best"] = best.model_score if best.model_score is not None else 0.0
            out["model_max"] = max(scored)
        return out

    def missing_word(self, query: Query, hit: Hit) -> float:
        """How rare the rarest of the question's own words that the cited passage lacks is
        (its idf as a share of the largest): a near-miss names the right thing and asks
        about something the passage never mentions."""
        kw = self.data.keyword
        passage = with_aliases(match_key(hit.chunk.title + hit.chunk.text), query.aliases)
        top = kw.token_idf("\0") or 1.0  # an unseen word has the largest idf
        missing = [kw.token_idf(word) for word, _, weight in query.terms
                   if weight >= 1.0 and len(word) >= 2 and not lang.contains_word(passage, word)]
        return max(missing, default=0.0) / top

    def _names_something(self, text: str) -> bool:
        return lang.mentions_name(text, self.data.tokenizer)

    def _zone_miss(self, question: str, passage: str) -> bool:
        # Only a place-like name counts: "进入开发区…" names no zone.
        question, passage = normalize_width(question), normalize_width(passage)
        names = {n for n in lang.zone_names(question) if self.data.tokenizer.is_proper(n)}
        return bool(names) and not any(lang.zone_named(n, question, passage) for n in names)

    def unknown_place(self, query: Query) -> str | None:
        """A county or development zone the question names that the sources never mention, if any.

        The name must be one of the question's own words and a place by jieba's
        dictionary (or a word it does not know) right before 县 or a zone suffix:
        "某某县", "某某经济技术开发区". Common words before a suffix (a verb before
        开发区, 贫困县, 各市县) name none.
        """
        tok = self.data.tokenizer
        words = [w for w, _, weight in query.terms if weight >= 1.0]
        text = normalize_width(query.text).lower()
        zones = [m.start() for m in lang.ZONE.finditer(text)]
        for word in words:
            if len(word) > 1 and word.endswith(lang.COUNTY) and tok.place_like(word):
                name = word[:-1]
            elif len(word) >= 2 and any(text.endswith(word, 0, start) for start in zones):
                name = word
            else:
                continue
            if len(name) >= 2 and tok.place_like(name) and not self.data.written(match_key(name)):
                return name
        return None


# --- fitting (rag judge fit) ---------------------------------------------------------------


def choose_threshold(probs: Sequence[float], answerable: Sequence[bool], max_false: float,
                     also_answerable: Sequence[float] = ()) -> float:
    """The threshold that declines the most unanswerable questions while declining at most
    ``max_false`` of the answerable ones, and of those the lowest.

    A higher threshold declines more unanswerable questions; the false-abstention
    budget (answerable questions declined) bounds it, on ``probs`` and, when given, on
    ``also_answerable`` (probabilities of further answerable questions) each. Within that
    bound, raising the threshold past the last unanswerable question it declines only
    declines answerable ones: the threshold stops just above that question.
    """
    ans = sorted(p for p, a in zip(probs, answerable, strict=True) if a)
    if not ans:
        return 0.5

    def lowest_kept(values: list[float]) -> float:
        allowed = int(max_false * len(values) + 1e-9)  # answerable questions that may fall below
        return values[allowed] if allowed < len(values) else 1.0

    # The lowest answerable probability that must still be answered.
    keep = min(lowest_kept(ans), lowest_kept(sorted(also_answerable)) if also_answerable else 1.0)
    if keep >= 1.0:
        return 1.0
    declined = [p for p, a in zip(probs, answerable, strict=True) if not a and p < keep]
    # Midway between the last unanswerable question declined and the next probability above
    # it, so the threshold stays off the data.
    last = max(declined, default=min([*probs, *also_answerable]) / 2)
    above = min((p for p in [*probs, *also_answerable] if p > last), default=keep)
    return (last + above) / 2


def expected_calibration_error(probs: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width bins, weighted by size."""
    if not probs:
        return 0.0
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if idx:
            conf = sum(probs[i] for i in idx) / len(idx)
            acc = sum(labels[i] for i in idx) / len(idx)
            total += len(idx) * abs(conf - acc)
    return total / len(probs)


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# The direction each signal may move P(right): a sign of a wrong answer never raises it. A
# miss that fires on a few dev questions which happened to be right would otherwise get a
# positive weight from a small dev split.
_HELPS, _HURTS = (0.0, None), (None, 0.0)
SIGNS: dict[str, tuple[float | None, float | None]] = {
    "confidence_rules": _HELPS, "has_lead": _HELPS,
    **{name: _HURTS for name in ("value_miss", "unit_miss", "money_miss", "date_miss", "number_miss",
                                 "missing_word", "unknown_place", "year_conflict", "person_miss", "zone_miss",
                                 "plain_value_miss", "rival_name")},
}


def calibrated(log_odds: float, calibration: tuple[float, float]) -> float:
    """P(right) from the fitted log-odds through the calibration's slope and offset."""
    z = calibration[0] * log_odds + calibration[1]
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def logistic(x: Any, y: Any, c: float, bounds: Sequence[tuple[float | None, float | None]],
             weight: Any = None) -> tuple[Any, float]:
    """L2-penalised logistic regression (sklearn's objective at ``C=c``, with optional sample
    weights) with each weight kept within its bounds; returns the weights and the intercept."""
    import numpy as np
    from scipy.optimize import minimize

    n = x.shape[1]
    sw = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)

    def loss(w: Any) -> tuple[float, Any]:
        z = x @ w[:n] + w[n]
        p = 1 / (1 + np.exp(-z))
        # log(1 + e^z) - y z, computed stably
        value = float(sw @ (np.logaddexp(0, z) - y * z) + 0.5 / c * w[:n] @ w[:n])
        g = sw * (p - y)
        return value, np.concatenate([x.T @ g + w[:n] / c, [g.sum()]])

    res = minimize(loss, np.zeros(n + 1), jac=True, method="L-BFGS-B", bounds=[*bounds, (None, None)])
    return res.x[:n], float(res.x[n])


def fit(
    rows: Sequence[dict[str, float]], correct: Sequence[bool], answerable: Sequence[bool],
    features: Sequence[str], max_false: float = 0.04, folds: int = 5, seed: int = 0,
) -> tuple[JudgeModel, list[float]]:
    """Fit the logistic judge; returns it and its out-of-fold probabilities.

    The regularisation strength is chosen by cross-validated log-loss, and the
    threshold on the out-of-fold probabilities (so on predictions for questions
    the fold's model did not see), for false abstention ≤ ``max_false``.
    """
    import numpy as np
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    x = np.array([[r[f] for f in features] for r in rows], dtype=np.float64)
    y = np.array(correct, dtype=int)
    if len(set(y)) < 2:
        raise ValueError("The judge needs both right and wrong answers to learn from; the dev run has only one kind.")

    repeats = 5
    bounds = [SIGNS.get(f, (None, None)) for f in features]

    def oof(c: float) -> np.ndarray:
        out = np.zeros(len(y))
        # Repeated with shuffled folds: the dev split is small.
        for rep in range(repeats):
            skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + rep)
            for train, test in skf.split(x, y):
                mean, scale = x[train].mean(0), x[train].std(0) + 1e-9
                coef, icpt = logistic((x[train] - mean) / scale, y[train], c, bounds)
                out[test] += 1 / (1 + np.exp(-((x[test] - mean) / scale @ coef + icpt))) / repeats
        return out

    grid = (0.03, 0.1, 0.3, 1.0, 3.0)
    losses = {c: log_loss(y, np.clip(oof(c), 1e-6, 1 - 1e-6)) for c in grid}
    c_best = min(losses, key=losses.__getitem__)
    probs = oof(c_best).tolist()
    threshold = choose_threshold(probs, answerable, max_false)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    coef, icpt = logistic((x - mean) / scale, y, c_best, bounds)
    model = JudgeModel(
        tuple(features), tuple(mean.tolist()), tuple(scale.tolist()), tuple(coef.tolist()),
        float(icpt), float(threshold), {"C": c_best, "cv_log_loss": losses},
    )
    return model, probs


def fit_calibration(log_odds: Sequence[float], correct: Sequence[bool], answerable: Sequence[bool],
                    unanswerable_share: float) -> tuple[float, float]:
    """Slope (kept positive, so the order of answers and the decisions stay) and offset on
    the judge's log-odds that make its probabilities right on ``log_odds`` (Platt scaling).

    The questions are weighted so that unanswerable ones make ``unanswerable_share`` of
    them, as in the rows the judge was fitted on: how many questions have no answer is
    the helpers' choice in a written set, not a fact about the questions users ask.
    """
    import numpy as np

    ans = np.array(answerable, dtype=bool)
    share = 1 - ans.mean()
    if not 0 < share < 1:
        raise ValueError("Calibration needs both answerable and unanswerable questions.")
    weight = np.where(ans, (1 - unanswerable_share) / (1 - share), unanswerable_share / share)
    coef, offset = logistic(np.array(log_odds, dtype=float)[:, None], np.array(correct, dtype=int), 1e6,
                            [(1e-3, None)], weight)
    return float(coef[0]), offset


def select_and_fit(
    rows: Sequence[dict[str, float]], correct: Sequence[bool], answerable: Sequence[bool],
    with_model: bool, max_false: float = 0.04, also_answerable: Sequence[dict[str, float]] = (),
) -> tuple[str, JudgeModel, list[float], dict[str, dict[str, float | None]]]:
    """Fit every candidate signal set and keep the best by its cross-validated dev figures:
    most unanswerable questions declined, then the better separation of right from wrong.

    ``also_answerable`` are the signals of further answerable questions the judge is not
    fitted on (hand-written ones): the threshold must keep false abstention within
    ``max_false`` on them as well as on the dev predictions, so a budget met on a small
    dev split by luck does not decline more answers on questions it never saw.
    """
    tried: dict[str, tuple[JudgeModel, list[float], dict[str, float | None]]] = {}
    for name, feats in FEATURE_SETS.items():
        feats = tuple(feats) + (MODEL_FEATURES if with_model else ())
        model, probs = fit(rows, correct, answerable, feats, max_false=max_false)
        extra = [model.probability(r) for r in also_answerable]
        if extra:
            threshold = choose_threshold(probs, answerable, max_false, extra)
            model = replace(model, threshold=threshold)
        figures = cv_figures(probs, correct, answerable, model.threshold)
        if extra:
            figures["also_answerable"] = len(extra)
            figures["also_answerable_false_abstention"] = sum(p < model.threshold for p in extra) / len(extra)
        tried[name] = (model, probs, figures)

    def key(name: str) -> tuple[float, float]:
        cv = tried[name][2]
        return (cv["abstention"] or 0.0, cv["auc_right_vs_wrong"] or 0.0)

    best = max(tried, key=key)
    return best, tried[best][0], tried[best][1], {n: t[2] for n, t in tried.items()}


def cv_figures(probs: Sequence[float], correct: Sequence[bool], answerable: Sequence[bool], threshold: float) -> dict[str, float | None]:
    """What the cross-validated dev predictions say about the judge at its threshold."""
    ans = [p for p, a in zip(probs, answerable, strict=True) if a]
    un = [p for p, a in zip(probs, answerable, strict=True) if not a]
    return {
        "questions": len(probs),
        "abstention": sum(p < threshold for p in un) / len(un) if un else None,
        "false_abstention": sum(p < threshold for p in ans) / len(ans) if ans else None,
        "auc_answerable_vs_not": auc(list(probs), list(answerable)),
        "auc_right_vs_wrong": auc(list(probs), list(correct)),
        "ece": expected_calibration_error(list(probs), list(correct)),
    }


def data_hash(rows: Sequence[dict[str, float]], correct: Sequence[bool]) -> str:
    blob = json.dumps([rows, list(correct)], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
