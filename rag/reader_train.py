"""``rag reader train``: training data, training, int8 ONNX export and dev measurement of the reader.

Owns how the reader's training pairs are made, the training loop, the export that
:mod:`rag.reader_model` loads, and the figures written to the model's manifest.

Data (the first attempt failed on it: its questions copied their sentences, so the
model learned word overlap):

* hand-written questions (``rag/data/reader_questions.jsonl``): paraphrases of a
  corpus sentence (subject named as in the title or the sentence before, other
  words, dropped words) and near-miss questions the corpus cannot answer;
* template questions made from a sentence's answer span (a date, a number with its
  unit, a quoted or company name) that keep only a few words near the span, with
  the subject taken from the section title or the previous sentence, synonyms
  swapped in and words dropped; plus the same question about another entity, for
  which the source sentence is a negative ("right attribute, wrong company");
* negatives from the project's own retrieval: the sentences of the top passages,
  ranked by the rule scorer, that do not hold the answer (they share the words).

Pairs mix the two input forms of :func:`rag.reader_model.pair_text` so the shipped
form can be chosen on the dev split. Only the dev split of ``eval/gold.jsonl`` is
read, and only to measure. torch and transformers are imported inside functions.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.evaluation import cites_evidence, load_gold
from rag.reader_model import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    CrossEncoderReader,
    encode_pairs,
    file_sha256,
    load_tokenizer,
    pair_text,
)
from rag.text import match_key

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.service import RagService
    from rag.types import Candidate as ScoredSentence

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS_FILE = ROOT / "rag" / "data" / "reader_questions.jsonl"
DATA_FILE = "train.jsonl.gz"
TORCH_THREADS = 2
CANDIDATE_PASSAGES = 5  # the answer is picked from this many passages (as Pipeline.answer_passages)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    out: Path
    epochs: int = 3
    max_pairs: int = 14000
    seed: int = 13
    max_tokens: int = 96
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_share: float = 0.06
    handwritten_repeats: int = 2  # hand-written pairs are few and closest to real questions
    title_share: float = 0.5  # pairs with the section title in front (the other input form)
    freeze_word_embeddings: bool = True
    gold: Path = ROOT / "eval" / "gold.jsonl"


@dataclass(frozen=True, slots=True)
class Example:
    question: str
    text: str
    label: int
    source: str


# --- candidates -----------------------------------------------------------


def candidates(svc: RagService, question: str) -> list[ScoredSentence]:
    """The sentences of the top passages for a question, best first by the rule scorer."""
    pipeline = svc.require().pipeline
    query = pipeline.queries.from_text(question)
    hits = pipeline.retrieve(query, CANDIDATE_PASSAGES)
    return pipeline.reader.read(query, hits)


class _Texts:
    """The reader's input text for any sentence of the index, in either input form."""

    def __init__(self, svc: RagService) -> None:
        self.sentences = svc.require().data.sentences

    def previous(self, sid: int) -> str:
        s = self.sentences
        return s[sid - 1].text if sid and s[sid - 1].doc_id == s[sid].doc_id else ""

    def text(self, sid: int, context: str) -> str:
        s = self.sentences[sid]
        return pair_text(s.text, s.title, self.previous(sid), context)


# --- hand-written questions -------------------------------------------------


def load_questions(path: Path = QUESTIONS_FILE) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for n, row in enumerate(rows, start=1):
        if not row.get("question") or (row.get("answer") is None) != (row.get("evidence") is None):
            raise ValueError(f"{path}:{n}: needs 'question', and 'answer' and 'evidence' together (or neither)")
    return rows


def _negatives(scored: Sequence[ScoredSentence], exclude: Collection[int], answer: str, rng: random.Random,
               hard: int) -> list[int]:
    """Negatives: the ``hard`` best-ranked sentences not excluded and not holding ``answer``
    (a match key; empty for none), plus one more at random."""
    ids = [
        s.sentence.sent_id for s in scored
        if s.sentence.sent_id not in exclude and not (answer and answer in match_key(s.sentence.text))
    ]
    picked = ids[:hard]
    if len(ids) > hard:
        picked.append(rng.choice(ids[hard:]))
    return picked


def handwritten_examples(svc: RagService, rows: Sequence[dict[str, Any]], texts: _Texts,
                         rng: random.Random) -> list[tuple[str, int, int, str]]:
    """(question, sentence id, label, source) for the hand-written questions."""
    keys = [match_key(s.text) for s in texts.sentences]
    out: list[tuple[str, int, int, str]] = []
    for row in _progress(rows, "hand-written questions"):
        question = row["question"]
        scored = candidates(svc, question)
        if row["answer"] is None:
            out += [(question, sid, 0, "handwritten-unanswerable") for sid in _negatives(scored, (), "", rng, 5)]
            continue
        ev, answer = match_key(row["evidence"]), match_key(row["answer"])
        positives = {i for i, k in enumerate(keys) if ev in k or (len(k) >= 12 and k in ev)}
        if not positives:
            # Evidence quoted across a sentence break matches no one sentence: the question is
            # left out, as `rag embed train` leaves it out.
            continue
        out += [(question, sid, 1, "handwritten") for sid in sorted(positives)]
        out += [(question, sid, 0, "handwritten") for sid in _negatives(scored, positives, answer, rng, 5)]
    return out


# --- template questions -------------------------------------------------------

_MEASURES = "个家项件人名位场次栋条所套台颗期笔枚份"
_UNIT = (
    r"(?:[万亿千百]*)(?:%|平方公里|平方米|万方|亿元|万元|美元|元|千克|公斤|吨|瓦|秒|小时|天|年|"
    r"人次|场次|[" + _MEASURES + r"])"
)
_SPANS = re.compile(
    r"(?P<date>\d{4}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日)"
    r"|(?P<num>[近超约]?\d+(?:\.\d+)?(?:余|多)?" + _UNIT + r")"
    r"|(?P<quote>“[^”]{2,14}”)"
    r"|(?P<org>[\u4e00-\u9fff]{2,12}?(?:有限公司|公司|集团|实验室|研究所|大学))"
)
_SPAN_WEIGHT = {"date": 3.0, "num": 3.0, "org": 2.0, "quote": 0.5}
_CLAUSE = re.compile(r"[^，,；;：:。！？!?]+")
_ENTITY = re.compile(r"[\u4e00-\u9fff]{2,10}?(?:经济开发区|开发区|高新区|综保区|科技城|小镇|智造园|高科园|公司|集团|实验室|中心|街道)")
_STOP = set(
    "的 了 在 是 和 与 及 等 也 都 已 将 还 就 被 把 对 为 从 以 于 中 上 下 其 该 这 此 并 而 或 个 有 让 使 由 向 "
    "我们 他们 目前 今年 去年 同时 此外 已经 通过 进行 一个 以及 其中 不断 进一步".split()
)
# Generic Chinese near-synonyms, so a question does not carry its sentence's exact words.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "增长": ("提高", "上涨", "增加"), "实现": ("达到", "完成"), "企业": ("公司",), "公司": ("企业",),
    "累计": ("总共", "一共"), "集聚": ("聚集", "汇聚"), "打造": ("建设", "建成"), "引进": ("引入", "招引"),
    "投资": ("投入",), "总投资": ("投资总额",), "面积": ("占地",), "位于": ("在",), "获批": ("批准",),
    "成立": ("创立", "设立"), "举办": ("办",), "开展": ("搞",), "发布": ("推出", "公布"), "投产": ("投入生产",),
    "产值": ("产出",), "同比": ("比上年",), "规划": ("计划",), "预计": ("估计",), "首个": ("第一个",),
    "参与": ("参加",), "覆盖": ("涵盖",), "超过": ("超",), "人才": ("人员",), "建设": ("建",),
    "新建": ("建了",), "落户": ("入驻", "落地"), "签约": ("签下",), "项目": ("工程",), "服务": ("帮助",),
    "研发": ("研究开发",), "生产线": ("产线",), "排名": ("排",), "位列": ("排在",), "突破": ("超过",),
    "占": ("占到",), "规模": ("体量",), "年产": ("每年生产",), "举行": ("召开",), "召开": ("举行",),
    "启动": ("开始",), "完成": ("做完",), "拥有": ("有",), "获得": ("拿到", "取得"), "荣获": ("获得",),
    "主要": ("重点",), "重点": ("主要",), "发展": ("做",), "推动": ("推进",), "达到": ("有",),
}


def _words(text: str) -> list[str]:
    import jieba

    return [w for w in jieba.lcut(text) if len(w) >= 2 and w not in _STOP and not re.fullmatch(r"[\W\d.]+", w)]


def _asking(kind: str, span: str, rng: random.Random) -> tuple[str, bool]:
    """The question word for an answer span, and whether it reads best at the front."""
    if kind == "date":
        options = ["哪天", "什么时候", "何时"] if "日" in span else ["什么时候", "何时"] if "月" in span else ["哪一年", "什么时候", "哪年"]
        return rng.choice(options), False
    if kind == "num":
        unit = re.sub(r"^[近超约]?[\d.]+(?:余|多)?", "", span)
        if unit == "%":
            return rng.choice(["多少", "多大比例", "百分之多少"]), False
        if unit and unit[-1] in _MEASURES:
            return rng.choice([f"多少{unit[-1]}", f"几{unit[-1]}", "多少"]), False
        return rng.choice(["多少", f"多少{unit}" if unit else "多少"]), False
    if kind == "quote":
        return rng.choice(["什么", "叫什么", "哪个"]), False
    return rng.choice(["哪家单位", "哪家公司", "谁", "哪个机构"]), True


def _subject(title: str, previous: str, sentence: str, clause_at: int, rng: random.Random) -> str:
    """Who the question is about, named as in the title, the previous sentence, the sentence, or not at all."""
    head = re.split(r"[:：\s]", title)[0]
    named = _ENTITY.search(title)
    options: list[str] = []
    if named or 2 <= len(head) <= 8:
        options += [named.group() if named else head] * 3
    if previous and (w := _words(previous)[:2]):
        options.append("".join(w))
    if clause_at > 0 and (w := _words(sentence[:clause_at])[:2]):
        options += ["".join(w)] * 2
    options.append("")
    return rng.choice(options)


def template_question(sentence: str, title: str, previous: str, rng: random.Random) -> tuple[str, str, str] | None:
    """(question, answer span, subject) asked about one answer span of a sentence, or None."""
    spans = [m for m in _SPANS.finditer(sentence) if m.lastgroup]
    if not spans:
        return None
    # Slogans in quotes make poor questions; numbers, dates and names make good ones.
    m = rng.choices(spans, weights=[_SPAN_WEIGHT[str(x.lastgroup)] for x in spans])[0]
    kind, span = str(m.lastgroup), m.group()
    clause = next((c for c in _CLAUSE.finditer(sentence) if c.start() <= m.start() < c.end()), None)
    if clause is None:
        return None
    before, after = sentence[clause.start() : m.start()], sentence[m.end() : clause.end()]
    near = _words(before)[-3:] + _words(after)[:3]
    words = [w for w in near if rng.random() > 0.25]
    words = [rng.choice(SYNONYMS[w]) if w in SYNONYMS and rng.random() < 0.6 else w for w in words][:4]
    if len(words) > 2 and rng.random() < 0.3:
        rng.shuffle(words)
    if not words:
        return None
    subject = _subject(title, previous, sentence, clause.start(), rng)
    if subject and any(subject in w or w in subject for w in words):
        subject = ""
    asking, front = _asking(kind, span, rng)
    body = "".join(words)
    if front:
        question = f"{asking}{rng.choice(['', '在'])}{subject}{body}？"
    else:
        question = rng.choice([f"{subject}{body}{asking}？", f"{subject}{'的' if subject else ''}{body}是{asking}？"])
    return question, span, subject


def template_examples(svc: RagService, texts: _Texts, budget: int, rng: random.Random) -> list[tuple[str, int, int, str]]:
    """(question, sentence id, label, source) from template questions, about ``budget`` pairs."""
    sents = texts.sentences
    entities = sorted({m.group() for s in sents for m in _ENTITY.finditer(s.text)})
    order = [s.sent_id for s in sents if 12 <= len(s.text) <= 200 and _SPANS.search(s.text)]
    rng.shuffle(order)
    out: list[tuple[str, int, int, str]] = []
    bar = _progress(None, "template questions", total=budget, unit="pair")
    for sid in order:
        if len(out) >= budget:
            break
        s = sents[sid]
        made = template_question(s.text, s.title, texts.previous(sid), rng)
        if made is None:
            continue
        question, span, subject = made
        key = match_key(span)
        before = len(out)
        out.append((question, sid, 1, "template"))
        scored = candidates(svc, question)
        out += [(question, i, 0, "template") for i in _negatives(scored, {sid}, key, rng, 3)]
        if subject and subject in question and rng.random() < 0.35:
            # The same question about another entity: the source sentence no longer answers it.
            other = rng.choice(entities)
            if other not in s.text and match_key(other) not in match_key(texts.previous(sid)):
                out.append((question.replace(subject, other, 1), sid, 0, "template-swapped"))
        bar.update(len(out) - before)
    bar.close()
    return out


def build_examples(svc: RagService, cfg: TrainConfig, rows: Sequence[dict[str, Any]]) -> list[Example]:
    """All training pairs, deterministic for a seed (and the same index and corpus)."""
    rng = random.Random(cfg.seed)
    texts = _Texts(svc)
    written = handwritten_examples(svc, rows, texts, rng) * cfg.handwritten_repeats
    budget = max(cfg.max_pairs - len(written), cfg.max_pairs // 4)
    raw = written + template_examples(svc, texts, budget, rng)
    if len(raw) > cfg.max_pairs:
        raw = rng.sample(raw, cfg.max_pairs)
    examples = []
    for question, sid, label, source in raw:
        context = "title" if rng.random() < cfg.title_share else "sentence"
        examples.append(Example(question, texts.text(sid, context), label, source))
    return examples


def write_examples(examples: Sequence[Example], path: Path) -> str:
    """Write pairs as gzip'd JSON lines (byte-identical for the same pairs); returns the content's sha256."""
    body = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in examples).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(body)
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(body).hexdigest()


# --- training -----------------------------------------------------------------


def _progress(items: Any, desc: str, total: int | None = None, unit: str = "question") -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, leave=False)


def _batches(lengths: Sequence[int], size: int, rng: random.Random) -> Iterator[list[int]]:
    """Batches of similar length (less padding), in random order."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    pool = size * 50
    batches = []
    for start in range(0, len(idx), pool):
        chunk = sorted(idx[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(batches)
    yield from batches


def _pad(rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    out = {}
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        arr = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            arr[i, : len(r[name])] = r[name]
        out[name] = torch.from_numpy(arr)
    return out


def train_model(examples: Sequence[Example], base: Path, cfg: TrainConfig) -> Any:
    """Fine-tune a classification head and the encoder on the pairs with binary cross-entropy."""
    import torch
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(TORCH_THREADS)
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    if cfg.freeze_word_embeddings:
        # 11M of the 24M weights; their Adam update costs time and the few
        # thousand questions cannot teach the vocabulary anything new.
        model.base_model.embeddings.word_embeddings.weight.requires_grad = False
    tok = load_tokenizer(base / TOKENIZER_FILE)
    rows = []
    for e in examples:
        enc = encode_pairs(tok, e.question, [e.text], cfg.max_tokens)
        rows.append({k: v[0].tolist() for k, v in enc.items()})
    labels = torch.tensor([float(e.label) for e in examples])
    lengths = [len(r["input_ids"]) for r in rows]
    steps = cfg.epochs * math.ceil(len(rows) / cfg.batch_size)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_share * steps), steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(cfg.seed)
    model.train()
    for epoch in range(cfg.epochs):
        bar = _progress(list(_batches(lengths, cfg.batch_size, rng)), f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        total = 0.0
        for n, batch in enumerate(bar, start=1):
            logits = model(**_pad([rows[i] for i in batch])).logits[:, 0]
            loss = loss_fn(logits, labels[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            total += float(loss)
            bar.set_postfix(loss=f"{total / n:.4f}")
        log.info("epoch %d: mean loss %.4f", epoch + 1, total / max(1, n))
    return model.eval()


def torch_scores(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], max_tokens: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for q, t in pairs:
            feeds = {k: torch.from_numpy(v) for k, v in encode_pairs(tok, q, [t], max_tokens).items()}
            out.append(float(torch.sigmoid(model(**feeds).logits[0, 0])))
    return np.asarray(out, dtype=np.float32)


def export_int8(model: Any, out: Path, max_tokens: int) -> None:
    """Export the model (with its sigmoid) to ONNX, then quantise weights to int8 (dynamic)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class _Prob(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
            return torch.sigmoid(logits[:, 0])

    sample = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    fp32 = out / f"model.fp32.tmp{os.getpid()}.onnx"
    int8 = out / f"model.int8.tmp{os.getpid()}.onnx"
    try:
        with torch.no_grad():
            torch.onnx.export(
                _Prob().eval(), (sample, sample, torch.zeros_like(sample)), str(fp32), input_names=names,
                output_names=["probability"], opset_version=17, dynamo=False,
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names} | {"probability": {0: "batch"}},
            )
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        os.replace(int8, out / MODEL_FILE)
    finally:
        fp32.unlink(missing_ok=True)
        int8.unlink(missing_ok=True)


# --- measurement --------------------------------------------------------------


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties half (Mann-Whitney)."""
    if not positive or not negative:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))
    n1, n0 = len(positive), len(negative)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass(frozen=True, slots=True)
class _DevRow:
    type: str
    answerable: bool
    rules: np.ndarray  # rule scores of the candidates, best first
    reader: np.ndarray  # reader probabilities, same order
    holds: np.ndarray  # does each candidate hold the evidence (answerable only)
    confidence: float  # the service's own confidence, for reference


def _pick_rate(rows: Sequence[_DevRow], w: float) -> float:
    return float(np.mean([r.holds[int(np.argmax(r.rules + w * r.reader))] for r in rows])) if rows else 0.0


WEIGHT_GRID = tuple(round(x, 2) for x in np.arange(0.0, 1.01, 0.05))


def cross_validated_weight(rows: Sequence[_DevRow], folds: int = 5) -> tuple[float, float]:
    """(held-out top-1 rate of rules + w·reader with w fitted on the other folds, w fitted on all)."""
    def best(train: Sequence[_DevRow]) -> float:
        return max(WEIGHT_GRID, key=lambda w: (_pick_rate(train, w), -w))

    hits = []
    for f in range(folds):
        test = [r for i, r in enumerate(rows) if i % folds == f]
        w = best([r for i, r in enumerate(rows) if i % folds != f])
        hits += [r.holds[int(np.argmax(r.rules + w * r.reader))] for r in test]
    return float(np.mean(hits)), best(rows)


def dev_rows(svc: RagService, score: Callable[[str, list[int]], np.ndarray], gold: Path) -> list[_DevRow]:
    """Candidates of every dev question with rule and reader scores. The test split is never read."""
    rows = []
    items = [i for i in load_gold([gold]) if i.split == "dev"]
    for item in _progress(items, "dev questions"):
        scored = candidates(svc, item.question)
        if not scored:
            continue
        sids = [s.sentence.sent_id for s in scored]
        holds = np.array([bool(item.evidence) and cites_evidence(s.sentence.text, item.evidence) for s in scored])
        rows.append(_DevRow(
            item.type, item.answerable, np.array([s.score for s in scored]), score(item.question, sids), holds,
            float(svc.ask(item.question).confidence),
        ))
    return rows


def dev_metrics(rows: Sequence[_DevRow]) -> dict[str, Any]:
    answerable = [r for r in rows if r.answerable]
    cv, w = cross_validated_weight(answerable)

    def block(rs: Sequence[_DevRow]) -> dict[str, Any]:
        return {
            "questions": len(rs),
            "rules_top1": round(_pick_rate(rs, 0.0), 3),
            "reader_top1": round(float(np.mean([r.holds[int(np.argmax(r.reader))] for r in rs])), 3) if rs else None,
            f"rules+{w}*reader_top1": round(_pick_rate(rs, w), 3),
            "evidence_in_candidates": round(float(np.mean([r.holds.any() for r in rs])), 3) if rs else None,
        }

    unanswerable = [r for r in rows if not r.answerable]
    reader_right = [bool(r.holds[int(np.argmax(r.reader))]) for r in answerable]
    rules_right = [bool(r.holds[0]) for r in answerable]
    return {
        "answerable": block(answerable) | {
            "combination_cv_top1": round(cv, 3), "combination_weight": w,
            "reader_fixes": sum(a and not b for a, b in zip(reader_right, rules_right, strict=True)),
            "reader_breaks": sum(b and not a for a, b in zip(reader_right, rules_right, strict=True)),
        },
        "by_type": {t: block([r for r in answerable if r.type == t]) for t in sorted({r.type for r in answerable})},
        "auc_max_reader_answerable_vs_unanswerable": _round(roc_auc(
            [float(r.reader.max()) for r in answerable], [float(r.reader.max()) for r in unanswerable])),
        # The reader's probability for the sentence the rules would cite: a judge feature.
        "auc_reader_on_rules_top": _round(roc_auc(
            [float(r.reader[0]) for r in answerable], [float(r.reader[0]) for r in unanswerable])),
        "auc_service_confidence": _round(roc_auc(
            [r.confidence for r in answerable], [r.confidence for r in unanswerable])),
        "unanswerable_questions": len(unanswerable),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def latency_ms(reader: CrossEncoderReader, question: str, texts: Sequence[str], n: int, repeats: int = 30) -> float:
    """Median wall time of one score() call over ``n`` candidate sentences, in ms."""
    picked = list(texts[:n])
    reader.score(question, picked)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reader.score(question, picked)
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 1)


def measure_dev(svc: RagService, reader: CrossEncoderReader, gold: Path) -> dict[str, Any]:
    """Dev-split figures of a reader for each input form of :func:`pair_text`."""
    texts = _Texts(svc)
    dev: dict[str, Any] = {}
    for context in ("sentence", "title"):
        scorer = lambda q, sids, c=context: reader.score(q, [texts.text(i, c) for i in sids])  # noqa: E731
        dev[context] = dev_metrics(dev_rows(svc, scorer, gold))
    return dev


# --- the command --------------------------------------------------------------


def train_reader(cfg: TrainConfig, settings: Settings) -> dict[str, Any]:
    """Make the data, train, export int8 ONNX, check it against torch, measure on dev; returns the manifest."""
    from rag.embedding import weights_fingerprint
    from rag.service import RagService

    started = time.time()
    svc = RagService(settings)
    svc.warm_up()
    base = svc.embedder.model_path
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    rows = load_questions()
    examples = build_examples(svc, cfg, rows)
    data_sha = write_examples(examples, out / DATA_FILE)
    shutil.copyfile(base / TOKENIZER_FILE, out / TOKENIZER_FILE)

    t0 = time.time()
    model = train_model(examples, base, cfg)
    train_seconds = time.time() - t0
    export_int8(model, out, cfg.max_tokens)

    # The int8 graph must rank as the torch model does.
    rng = random.Random(cfg.seed + 1)
    probe = rng.sample(list(examples), min(200, len(examples)))
    pairs = [(e.question, e.text) for e in probe]
    ours = torch_scores(model, load_tokenizer(out / TOKENIZER_FILE), pairs, cfg.max_tokens)
    manifest: dict[str, Any] = {"files": {MODEL_FILE: file_sha256(out / MODEL_FILE), TOKENIZER_FILE: file_sha256(out / TOKENIZER_FILE)}}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    reader = CrossEncoderReader(out, threads=1, max_tokens=cfg.max_tokens)
    reader.warm_up()
    int8 = np.concatenate([reader.score(q, [t]) for q, t in pairs])
    agreement = {
        "pairs": len(pairs),
        "pearson": _round(float(np.corrcoef(ours, int8)[0, 1])) if len(pairs) > 1 else None,
        "max_abs_diff": _round(float(np.abs(ours - int8).max())),
    }

    texts = _Texts(svc)
    dev = measure_dev(svc, reader, cfg.gold)
    chosen = max(dev, key=lambda c: (dev[c]["answerable"]["reader_top1"], dev[c]["answerable"]["combination_cv_top1"]))
    # Latency on real candidate lists: the sentences retrieval brings for the hand-written questions.
    sample = [texts.text(s.sentence.sent_id, chosen) for row in rows[:4] for s in candidates(svc, row["question"])]
    manifest = {
        "model": "cross-encoder reader: P(sentence states the answer | question), int8 ONNX",
        "files": manifest["files"],
        "base_model": {"name": base.name, "weights_fingerprint": weights_fingerprint(base)},
        "training_data": {
            "file": DATA_FILE, "sha256": data_sha, "pairs": len(examples),
            "positives": sum(e.label for e in examples),
            "sources": dict(Counter(e.source for e in examples)),
            "questions_file": QUESTIONS_FILE.relative_to(ROOT).as_posix(),
            "questions_sha256": file_sha256(QUESTIONS_FILE),
        },
        "settings": {
            "context": chosen, "max_tokens": cfg.max_tokens, "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate, "warmup_share": cfg.warmup_share, "seed": cfg.seed,
            "max_pairs": cfg.max_pairs, "handwritten_repeats": cfg.handwritten_repeats,
            "title_share": cfg.title_share, "freeze_word_embeddings": cfg.freeze_word_embeddings,
            "torch_threads": TORCH_THREADS,
        },
        "epochs": cfg.epochs,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_seconds": round(train_seconds),
        "total_seconds": round(time.time() - started),
        "int8_vs_torch": agreement,
        "dev": {"note": "dev split of eval/gold.jsonl only; the context form was chosen on these figures", **dev},
        "latency_ms_one_thread": {
            f"{n}_sentences": latency_ms(reader, rows[0]["question"], sample, n) for n in (10, 15, 30)
        },
        "command": f"rag reader train --out {out} --epochs {cfg.epochs} --max-pairs {cfg.max_pairs} --seed {cfg.seed}",
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


def run_train_command(args: Any, settings: Settings) -> int:
    cfg = TrainConfig(out=args.out, epochs=args.epochs, max_pairs=args.max_pairs, seed=args.seed)
    if cfg.epochs < 1 or cfg.max_pairs < 8:
        raise ValueError("--epochs must be at least 1 and --max-pairs at least 8")
    manifest = train_reader(cfg, settings)
    print(json.dumps({k: manifest[k] for k in ("training_data", "int8_vs_torch", "dev", "latency_ms_one_thread")},
                     ensure_ascii=False, indent=2))
    return 0
