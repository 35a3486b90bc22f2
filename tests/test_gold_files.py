"""Checks on the gold files themselves: eval/gold.jsonl and eval/chat_gold.jsonl.

Every answerable item must be checkable against the raw corpus: its evidence sits
verbatim inside one line of its source file and every answer string occurs in that file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from rag.evaluation import TYPES, load_chat, load_gold
from rag.text import match_key

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "eval" / "gold.jsonl"
CHAT = ROOT / "eval" / "chat_gold.jsonl"
CORPUS = ROOT / "corpus"


def no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


@cache
def source_lines(name: str) -> tuple[str, ...]:
    return tuple(no_space(line.strip()) for line in (CORPUS / name).read_text(encoding="utf-8").splitlines())


@cache
def source_key(name: str) -> str:
    return match_key((CORPUS / name).read_text(encoding="utf-8"))


def raw_objects(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{path.name}:{n} is blank"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"{path.name}:{n}"
        out.append(obj)
    return out


@pytest.fixture(scope="module")
def gold():
    return load_gold([GOLD])


@pytest.fixture(scope="module")
def chats():
    return load_chat(CHAT)


def check_item(obj: dict, where: str) -> None:
    """The per-question checks shared by both files (on the raw JSON object)."""
    assert isinstance(obj.get("question"), str) and obj["question"].strip(), where
    answers = obj.get("answers")
    assert isinstance(answers, list), where
    if not answers:
        assert obj.get("source") is None, f"{where}: unanswerable item names a source"
        assert not obj.get("evidence"), f"{where}: unanswerable item has evidence"
        return
    source = obj.get("source")
    assert isinstance(source, str) and (CORPUS / source).is_file(), f"{where}: source {source!r}"
    evidence = obj.get("evidence")
    assert isinstance(evidence, str) and evidence.strip(), f"{where}: no evidence"
    ev = no_space(evidence)
    assert any(ev in line for line in source_lines(source)), (
        f"{where}: evidence is not verbatim within one line of {source}: {evidence!r}"
    )
    for answer in answers:
        assert isinstance(answer, str) and answer.strip(), where
        assert match_key(answer) in source_key(source), f"{where}: answer {answer!r} not in {source}"


# --- eval/gold.jsonl -------------------------------------------------------------------


def test_gold_file_parses_and_loads(gold):
    objects = raw_objects(GOLD)
    assert len(objects) == len(gold)
    for obj, item in zip(objects, gold, strict=True):
        assert obj["id"] == item.id
        assert obj.get("type") in TYPES, obj["id"]


def test_gold_ids_are_unique(gold):
    ids = Counter(item.id for item in gold)
    assert [i for i, n in ids.items() if n > 1] == []


def test_gold_size_and_mix(gold):
    assert len(gold) >= 120
    unanswerable = [i for i in gold if not i.answerable]
    assert len(unanswerable) >= 10
    assert all(i.type == "unanswerable" and i.source is None and i.answers == () for i in unanswerable)
    assert all(i.type != "unanswerable" for i in gold if i.answerable)
    paraphrase = sum(i.type == "paraphrase" for i in gold)
    assert paraphrase * 3 >= len(gold), paraphrase
    assert {i.split for i in gold} == {"dev", "test"}
    splits = Counter(i.split for i in gold)
    assert min(splits.values()) >= len(gold) // 3


def test_gold_covers_every_corpus_file(gold):
    corpus_files = {p.name for p in CORPUS.iterdir() if p.suffix in (".txt", ".md") and p.name.lower() != "readme.md"}
    assert corpus_files
    assert {i.source for i in gold if i.source} == corpus_files


def test_gold_unanswerable_lines_have_empty_answers_and_null_source():
    for obj in raw_objects(GOLD):
        if obj.get("type") == "unanswerable":
            assert obj["answers"] == [] and obj.get("source") is None, obj["id"]


def test_gold_items_are_grounded_in_their_source():
    for obj in raw_objects(GOLD):
        check_item(obj, f"gold {obj['id']}")


def test_gold_questions_are_distinct(gold):
    questions = Counter(no_space(i.question) for i in gold)
    assert [q for q, n in questions.items() if n > 1] == []


# --- eval/chat_gold.jsonl ------------------------------------------------------------------


def test_chat_file_parses_and_loads(chats):
    objects = raw_objects(CHAT)
    assert len(objects) == len(chats)
    for obj, dialogue in zip(objects, chats, strict=True):
        assert obj["id"] == dialogue.id
        assert len(obj["turns"]) == len(dialogue.turns)


def test_chat_ids_unique_and_sizes(chats):
    assert len(chats) >= 15
    ids = Counter(d.id for d in chats)
    assert [i for i, n in ids.items() if n > 1] == []
    assert all(2 <= len(d.turns) <= 3 for d in chats)
    assert {d.split for d in chats} == {"dev", "test"}


def test_chat_turns_are_grounded_in_their_source():
    for obj in raw_objects(CHAT):
        for n, turn in enumerate(obj["turns"], start=1):
            check_item(turn, f"chat {obj['id']} turn {n}")


def test_chat_follow_ups_need_the_history(chats):
    """Later turns are follow-ups: most of them are short and name no subject of their own."""
    follow_ups = [t for d in chats for t in d.turns[1:]]
    assert follow_ups
    pronouns = re.compile(r"^(它|他|她|那|这|其|该|那里|这里|那么|还有|此外)")
    assert sum(bool(pronouns.search(t.question)) for t in follow_ups) >= len(follow_ups) // 2


def test_gold_and_chat_do_not_share_ids(gold, chats):
    assert not {i.id for i in gold} & {d.id for d in chats}


# --- hand-written check sets (rag/data) --------------------------------------------------

DATA = ROOT / "rag" / "data"
HAND_WRITTEN = ("reader_questions.jsonl", "extra_questions.jsonl", "extra_unanswerable.jsonl", "extra_chats.jsonl",
                "extra_chats_2.jsonl", "judge_questions.jsonl", "judge_chats.jsonl", "calibration.jsonl")


def hand_written_questions(name: str) -> list[str]:
    objs = raw_objects(DATA / name)
    return [t["question"] for o in objs for t in o.get("turns", [o])]


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_sets_share_no_question_with_the_gold_files(name):
    """Helpers wrote these without opening eval/; a question that happens to equal a gold one
    (it did once) is taken out, so nothing trained or tuned on them has seen a gold question."""
    gold = {o["question"] for o in raw_objects(GOLD)} | {t["question"] for o in raw_objects(CHAT) for t in o["turns"]}
    assert not set(hand_written_questions(name)) & gold


@pytest.mark.parametrize("name", ["extra_chats.jsonl", "extra_chats_2.jsonl", "judge_chats.jsonl"])
def test_hand_written_dialogues_are_grounded_in_their_source(name):
    """Evidence may run across a wrapped line of the PDF text: it is found with whitespace removed."""
    for obj in raw_objects(DATA / name):
        assert len(obj["turns"]) >= 2, obj["id"]
        for n, turn in enumerate(obj["turns"], start=1):
            where = f"{obj['id']} turn {n}"
            assert match_key(turn["evidence"]) in source_key(turn["source"]), where
            assert all(match_key(a) in match_key(turn["evidence"]) for a in turn["answers"]), where


def test_hand_written_unanswerable_questions_have_no_answer():
    objs = raw_objects(DATA / "extra_unanswerable.jsonl")
    assert len(objs) >= 200
    assert all(o["answer"] is None and o["evidence"] is None and o["question"].strip() for o in objs)


@pytest.mark.parametrize("name", ["judge_questions.jsonl", "calibration.jsonl"])
def test_the_judges_written_questions_are_grounded_and_new(name):
    """What the judge learns from beside the dev split, and what calibrates it: answerable
    questions hold their answer in evidence found in their article, near-misses have none; no
    question is one of another set (the check sets stay unfitted)."""
    objs = raw_objects(DATA / name)
    answerable = [o for o in objs if o["answer"]]
    assert len(answerable) >= 150 and len(objs) - len(answerable) >= 80
    for o in answerable:
        assert match_key(o["evidence"]) in source_key(o["doc_id"] + ".txt"), o["question"]
        assert match_key(o["answer"]) in match_key(o["evidence"]), o["question"]
    assert all(o["evidence"] is None and o["kind"] in ("attribute", "sibling", "time-or-other")
               for o in objs if not o["answer"])
    others = {q for other in HAND_WRITTEN if other != name for q in hand_written_questions(other)}
    assert not {o["question"] for o in objs} & others
