"""Declared short names ("（以下简称“格林达”）") on the real corpus and what they change in
answering; abbreviations found written out in full; and follow-up retrieval near what the
previous answer cited (real index)."""

from __future__ import annotations

import pytest

from rag.aliases import Alias, mentions, mine_aliases, with_aliases
from rag.query import Turn
from rag.text import match_key


@pytest.fixture(scope="module")
def data(service):
    return service.require().data


def test_declared_short_names_are_mined_with_the_long_name_they_stand_for(data):
    aliases = mine_aliases(d.text for d in data.documents.values())
    assert Alias("格林达电子材料股份有限公司", "格林达") in aliases
    # The long name starts where the short name's first character does, not at the place before it.
    assert Alias("中国科学院肿瘤与基础研究所", "中科院肿基所") in aliases
    # Not made from its long name's characters: where that name starts cannot be told.
    assert not any(a.short == "广交会" for a in aliases)
    # A declaration that only repeats the name it follows declares nothing.
    assert all(a.name != a.short for a in aliases)


def test_mine_aliases_reads_declarations_in_any_text():
    text = "位于园区的杭州某某精密机械有限公司（以下简称“某某精密”）今年投产。某某精密的产品销往海外。"
    assert mine_aliases([text]) == (Alias("某某精密机械有限公司", "某某精密"),)
    assert mine_aliases(["没有任何简称的一段文字。"]) == ()


def test_a_text_with_the_other_form_counts_as_naming_what_was_asked():
    alias = Alias("某某精密机械有限公司", "某某精密")
    long_q = mentions("杭州某某精密机械有限公司的产品销往哪里？", [alias])
    assert [(m.asked, m.other) for m in long_q] == [("某某精密机械有限公司", "某某精密")]
    short_sentence = match_key("某某精密的产品销往海外。")
    assert "某某精密机械有限公司" in with_aliases(short_sentence, long_q)
    # Asked by the short name: the long name's other words are not credited to a sentence.
    short_q = mentions("某某精密的产品销往哪里？", [alias])
    assert [(m.asked, m.other) for m in short_q] == [("某某精密", "某某精密机械有限公司")]
    assert with_aliases(short_sentence, short_q) == short_sentence
    assert mentions("别的公司在哪里？", [alias]) == ()


def test_question_by_the_long_name_finds_the_sentence_that_uses_the_short_one(service):
    # The month it moved in is stated only under the short name the article declared.
    answer = service.ask("中国科学院肿瘤与基础研究所是哪个月落户杭州医药港的？")
    assert not answer.abstained
    assert any("6月份" in c.text and "中科院肿基所" in c.text for c in answer.citations)
    query = service.require().pipeline.queries.from_text("中国科学院肿瘤与基础研究所是哪个月落户杭州医药港的？")
    assert [m.other for m in query.aliases] == ["中科院肿基所"]


def test_follow_up_retrieval_favours_passages_near_the_previous_citation(service):
    from dataclasses import replace

    pipeline = service.require().pipeline
    retriever = pipeline.retriever
    # Asked alone, "那里有多少家企业？" made standalone ranks another passage first.
    q1 = "综保区有几项制度创新入选了国家级案例？"
    first = service.ask(q1)
    quoted = retriever.cited_sentences(first.text)
    assert quoted and all(match_key(retriever.data.sentences[i].text)[:12] in match_key(first.text) for i in quoted)
    near = retriever.near_passages(first.text)
    assert {c.chunk_id for c in first.citations} <= near
    follow = pipeline.queries.from_turns([Turn("user", q1), Turn("assistant", first.text), Turn("user", "那里有多少家企业？")])
    assert follow.near == first.text
    assert not pipeline.queries.from_text(follow.text).near
    with_near = pipeline.retrieve(follow, 20)
    without = pipeline.retrieve(replace(follow, near=""), 40)

    def best_near_rank(hits):
        return min((r for r, h in enumerate(hits) if h.chunk.chunk_id in near), default=99)

    assert best_near_rank(with_near) == 0 < best_near_rank(without)
    # Only their rank moves: the scores the judge reads are retrieval's own.
    own = {h.chunk.chunk_id: h.score for h in without}
    for h in with_near:
        if h.chunk.chunk_id in own:
            assert h.score == pytest.approx(own[h.chunk.chunk_id], abs=1e-6)


def test_no_near_passages_after_an_abstention(service):
    builder = service.require().pipeline.queries
    from rag import lang

    query = builder.from_turns([Turn("user", "格林达的合作伙伴有哪些？"), Turn("assistant", lang.NOT_FOUND),
                                Turn("user", "它的产品有哪些？")])
    assert query.near == ""


@pytest.mark.parametrize(
    ("word", "text", "found"),
    [
        ("综保区", "杭州综合保税区的企业", True),  # an abbreviation, written out in full
        ("综保区", "综合，保税区", False),  # not across a clause
        ("综保区", "综合服务与保险业务的园区", False),  # too far apart to be one name
        ("保税", "保险税收", False),  # two characters in order say nothing
        ("关区代码", "关区的代码", True),
    ],
)
def test_a_word_is_found_written_out_in_full(word, text, found):
    from rag import lang

    assert lang.contains_word(text, word) is found


def test_coverage_credits_an_abbreviation_as_its_full_name(service):
    pipeline = service.require().pipeline
    sentence = match_key("杭州综合保税区现规划面积约2.0平方公里。")
    short = pipeline.queries.from_text("杭州综保区规划面积多大？")
    full = pipeline.queries.from_text("杭州综合保税区规划面积多大？")
    assert pipeline.reader.coverage(short, sentence) == pytest.approx(1.0)
    assert pipeline.reader.coverage(full, sentence) == pytest.approx(1.0)
