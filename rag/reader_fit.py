"""``rag reader fit``: the reader's sentence-score weights, fitted on the dev split.

Owns collecting, for every dev question and chat turn with gold evidence, the
reader's features of each candidate sentence and whether citing it cites the
evidence; the fit of the weights (a conditional logit: a softmax over one
question's candidates, pulled towards the code's default weights by a penalty
whose strength 5-fold cross-validation picks by the one-standard-error rule, the
defaults themselves being one of the choices); and the weights file
(``models/reader-weights.json``) that :func:`rag.pipeline.build_pipeline` reads.
The test split is never read here.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.reader import DEFAULT_WEIGHTS, FEATURES, ReaderConfig

if TYPE_CHECKING:
    from rag.config import Settings

# Penalty strengths tried by cross-validation: strong ones keep the previous weights.
STRENGTHS = (0.1, 1.0, 10.0, 100.0, 1e4)
FOLDS = 5


@dataclass(frozen=True, slots=True)
class Question:
    """One question's candidates: features (rows) and which cite the evidence."""

    id: str
    features: np.ndarray  # candidates x len(FEATURES)
    positive: np.ndarray  # bool per candidate


def _nll(u: np.ndarray, questions: Sequence[Question], prior: np.ndarray, strength: float) -> tuple[float, np.ndarray]:
    """Negative log-probability that the top candidate is a positive one, plus the pull to ``prior``."""
    loss = 0.5 * strength * float((u - prior) @ (u - prior))
    grad = strength * (u - prior)
    for q in questions:
        z = q.features @ u
        p = np.exp(z - z.max())
        p /= p.sum()
        pos = p * q.positive
        mass = pos.sum()
        loss -= math.log(max(mass, 1e-300))
        # d/du [logsumexp(all) - logsumexp(positives)]
        grad += q.features.T @ p - q.features.T @ (pos / max(mass, 1e-300))
    return loss, grad


def fit_logits(questions: Sequence[Question], prior: np.ndarray, strength: float) -> np.ndarray:
    """Weights in logit units (score x temperature) maximising the chance of ranking a positive first."""
    from scipy.optimize import minimize

    res = minimize(_nll, prior.copy(), args=(questions, prior, strength), jac=True, method="L-BFGS-B")
    return np.asarray(res.x)


def temperature(questions: Sequence[Question], weights: np.ndarray) -> float:
    """The scale that turns ``weights``' scores into the best-fitting softmax logits."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda t: _nll(t * weights, questions, weights, 0.0)[0], bounds=(0.1, 500.0), method="bounded")
    return float(res.x)


def hit_rate(questions: Sequence[Question], u: np.ndarray) -> float:
    """Share of questions whose best-scored candidate cites the evidence."""
    return sum(bool(q.positive[int(np.argmax(q.features @ u))]) for q in questions) / len(questions) if questions else 0.0


def to_config_scale(u: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``u`` rescaled so its positive evidence weights (dense, coverage, passage) sum as in
    ``reference``: the ranking is unchanged, and thresholds relative to the best score
    (a neighbour joining the answer, the judge's signals) keep their scale."""
    gain = [FEATURES.index(n) for n in ("dense", "cover", "cover_context", "passage")]
    total = float(u[gain].sum())
    if total <= 0:
        raise ValueError("The fitted weights give no credit to similarity, coverage or retrieval; not kept.")
    return u * float(reference[gain].sum()) / total


def cross_validate(questions: Sequence[Question], prior: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Held-out hit rate of the prior and of each penalty strength (5 folds, seeded)."""
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    hits: dict[str, int] = {"prior": 0, **{str(s): 0 for s in STRENGTHS}}
    for k in range(FOLDS):
        held = [questions[i] for i in order[k::FOLDS]]
        train = [questions[i] for j, i in enumerate(order) if j % FOLDS != k]
        hits["prior"] += round(hit_rate(held, prior) * len(held))
        scaled = prior * temperature(train, prior)
        for s in STRENGTHS:
            hits[str(s)] += round(hit_rate(held, fit_logits(train, scaled, s)) * len(held))
    return {k: v / len(questions) for k, v in hits.items()}


def choose_strength(cv: dict[str, float], n: int) -> float | None:
    """The strongest pull to the prior whose cross-validated hit rate is within one standard
    error of the best (the one-standard-error rule); None when the prior itself is.

    A few dev questions separate the strengths, which is noise: a weak pull then lets
    weights drift that the judge reads too (a heavier value-kind penalty hides the
    sentences whose missing value tells a near-miss).
    """
    top = max(cv.values())
    floor = top - math.sqrt(top * (1 - top) / max(n, 1)) - 1e-9
    if cv["prior"] >= floor:
        return None
    return max(s for s in STRENGTHS if cv[str(s)] >= floor)


def collect(settings: Settings, progress: Any = lambda x: x) -> list[Question]:
    """Every dev question and chat turn with gold evidence, through the shipped stages."""
    from rag.evaluation import answer_unjudged, cites_evidence, dev_pipeline, load_dev

    # The rule reader's weights are fitted, whatever reader the settings name, from the code's
    # defaults, not from an earlier fit, so the command reproduces.
    # (The judge is not asked, so not loaded: its file may be of another reader's state.)
    pipe = dev_pipeline(settings.model_copy(update={"reader": "rules"}), default_weights=True)
    reader = pipe.reader
    out: list[Question] = []
    for t in answer_unjudged(pipe, *load_dev(), progress=progress):
        rows = reader.features(t.query, t.hits) if t.item.evidence else []
        if not rows:
            continue
        feats = np.array([list(f) for *_, f in rows], dtype=float)
        # A candidate is right when what the answer would cite for it (with its context) holds the evidence.
        positive = np.array([cites_evidence("".join(s.text for s in reader.span(sent)), t.item.evidence)
                             for sent, *_ in rows])
        if positive.any() and not positive.all():
            out.append(Question(t.item.id, feats, positive))
    return out


def data_hash(questions: Sequence[Question]) -> str:
    h = hashlib.sha256()
    for q in questions:
        h.update(q.id.encode())
        h.update(np.round(q.features, 6).tobytes())
        h.update(q.positive.tobytes())
    return h.hexdigest()[:16]


def run_reader_fit_command(args: Any, settings: Settings) -> int:
    """``rag reader fit``: fit the sentence-score weights on dev and write them."""
    from tqdm import tqdm

    from rag.reader import save_weights

    if args.split != "dev":
        raise ValueError("The reader's weights are fitted on the dev split only (the test split is for reporting).")
    out: Path = args.out or settings.reader_weights_path or DEFAULT_WEIGHTS
    questions = collect(settings, lambda x: tqdm(x, desc="dev", unit="q"))
    if len(questions) < 2 * FOLDS:
        raise ValueError(f"Only {len(questions)} dev questions have evidence among their candidates; too few to fit.")
    prior = np.array(ReaderConfig().weights(), dtype=float)
    cv = cross_validate(questions, prior, args.seed)
    best = choose_strength(cv, len(questions))
    if best is not None:
        u = fit_logits(questions, prior * temperature(questions, prior), best)
        weights = to_config_scale(u, prior)
    else:
        weights = prior
    info = {
        "fitted_on": f"dev split of eval/gold.jsonl and eval/chat_gold.jsonl ({len(questions)} questions "
                     "and turns whose evidence is among the candidates)",
        "data_sha256": data_hash(questions), "embedder": settings.embedder,
        "cross_validated_hit_rate": {k: round(v, 4) for k, v in cv.items()},
        "strength": best, "kept": "fitted" if best is not None else "defaults (no fit beat them by more than one standard error)",
        "train_hit_rate": round(hit_rate(questions, weights), 4), "prior_hit_rate": round(hit_rate(questions, prior), 4),
        "command": f"rag reader fit --out {out}",
    }
    save_weights(out, dict(zip(FEATURES, map(float, weights), strict=True)), info)
    print(f"Reader weights written to {out} ({info['kept']}); cross-validated top-sentence hit rate on dev:")
    for k, v in cv.items():
        print(f"  {'the defaults' if k == 'prior' else f'fitted, pull {k}'}: {v:.3f}")
    for name, w in zip(FEATURES, weights, strict=True):
        print(f"  weight {name}: {w:+.3f}")
    return 0
