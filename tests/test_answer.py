"""Answer composition: the check that an answer states the kind of value asked for.

The pure checks run on strings; the behaviour runs on the real service (model,
FAISS and BM25 index), where a value the sources never state in the unit asked
for must lower confidence to abstention.
"""

from __future__ import annotations

import pytest

from rag.lang import lacks_value, names_a_rival, value_check, year_conflict, zone_named, zone_names
from rag.text import normalize_width


@pytest.mark.parametrize(
    ("question", "text", "lacks"),
    [
        ("园区的规划面积是多少平方公里？", "规划面积约3.6平方公里。", False),
        ("园区的规划面积是多少平方公里？", "园区位于钱塘区东部。", True),
        ("园区的规划面积是多少平方公里？", "园区新引进企业27家。", True),  # a number, but not in the unit asked
        ("总投资是多少亿元？", "总投资36.46亿元。", False),
        ("产量是多少万吨？", "投资36.46亿元。", True),
        ("产量是多少万吨？", "年产3万吨。", False),
        ("模型算力是多少PFlops？", "算力达到40pflops。", False),  # letter case does not matter
        ("占比有几成？", "占国内出境展总面积的21.64%。", False),  # a percentage says 几成 too
        ("排在全市第几位？", "钱塘区排名全市第一。", False),
        ("排在全市第几位？", "钱塘区排名靠前。", True),
        ("项目总投资是多少？", "2012年4月19日落户于新区的整车项目。", True),  # a date is not an amount
        ("项目总投资是多少？", "总投资7.6亿美元。", False),
        ("有几家药企落户？", "已有七家在杭州医药港落户。", False),
        ("公司是哪一年成立的？", "公司成立于2018年5月。", False),
        ("公司是哪一年成立的？", "前不久，公司揭牌成立。", True),
        ("公司的总部在哪里？", "任何句子", False),  # asks no value: nothing to check
        ("有几个产业平台？", "共有6个平台。", False),
        ("杭州有多少AI企业？", "杭州有120家人工智能企业。", False),
        ("道路全长多少公里？", "全长15千米。", False),  # the same unit, written another way
        ("算力是多少PFlops？", "投资40亿元。", True),
        ("装机容量有多少MW的光伏？", "光伏装机200MW。", False),  # a Latin unit before 的
        ("该平台有多少成员单位？", "共有35家成员单位。", False),  # 成员 is no 成 (tenths)
        ("每年供应多少天然气？", "年供气3亿立方米。", False),  # 天然气 is no 天 (days)
        # Money is answered in a currency; large sums often drop the 元.
        ("园区去年投入了多少资金？", "园区去年新建了500多个充电桩。", True),
        ("这个项目总投资多少？", "总投资约20亿，建设三条产线。", False),
        ("这批设备价值多少？", "价值110万元的设备已运抵。", False),
        ("学校为此花了多少钱？", "学校购置了小床180张。", True),
        ("学校为此花了多少钱？", "学校投入近600万元。", False),
        # A count of things invested in, or a change, is not a sum of money.
        ("集团投资了多少个项目？", "集团共投资了12个项目。", False),
        ("产值增长了多少？", "产值增长5.8%。", False),
    ],
)
def test_value_check(question, text, lacks):
    assert lacks_value(value_check(question), text) is lacks


def test_ordinal_and_unit_questions_pick_their_own_check():
    assert value_check("公司的总部在哪里？") is None
    assert value_check("排在第几位？") is not None
    area, count = value_check("多少平方公里"), value_check("多少")
    assert area is not None and count is not None and area[0].pattern != count[0].pattern
    assert value_check("杭州有多少AI企业？") == count  # letters run into Chinese are a name, not a unit
    assert value_check("有几个产业平台？") == count  # counting words need only some quantity
    kinds = {q: value_check(q).kind for q in ("多少平方公里", "哪一年成立", "增长率是多少", "排在第几位？", "有几家")}
    assert kinds == {"多少平方公里": "unit", "哪一年成立": "date", "增长率是多少": "rate", "排在第几位？": "ordinal",
                     "有几家": "number"}


def test_answer_in_another_unit_abstains(service):
    """The same fact asked in the unit the source uses is answered; in a unit it never uses, not."""
    answered = service.ask("杭州医药港已集聚各类生物医药企业多少家？")
    assert not answered.abstained
    assert "1000余家" in answered.text and answered.citations
    wrong_unit = service.ask("杭州医药港已集聚各类生物医药企业多少吨？")
    assert wrong_unit.abstained
    assert not wrong_unit.citations and wrong_unit.hits  # the closest passages are still offered
    assert wrong_unit.confidence < answered.confidence


@pytest.mark.parametrize("question", ["杭州综合保税区的前身是什么？", "竞聘后硕士以上学历的干部占比多少？"])
def test_cited_passages_lead_the_hits(service, question):
    """The passage the answer comes from is the first hit, even when retrieval ranked it lower."""
    answer = service.ask(question, top_k=5)
    assert not answer.abstained and answer.citations
    cited = {c.chunk_id for c in answer.citations}
    best = answer.citations[0].chunk_id  # the first citation is the answer's best sentence
    # Retrieval alone put another passage first: the answer moved the best one up.
    assert service.search(question, top_k=5)[0].chunk.chunk_id != best
    assert answer.hits[0].chunk.chunk_id == best
    # The cited passages come before any passage the answer does not use.
    flags = [h.chunk.chunk_id in cited for h in answer.hits]
    assert flags == sorted(flags, reverse=True)
    # With room for one passage, it is the best one.
    assert service.ask(question, top_k=1).hits[0].chunk.chunk_id == best
    # /search keeps pure retrieval order.
    scores = [h.score for h in service.search(question, top_k=5)]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("question", "answer", "conflict"),
    [
        ("这家企业2022年全年的销售额是多少？", "2023年1月-4月累积出口约1800万元。", True),
        ("2022年的销售额是多少？", "2022年销售额达到30亿元，2023年继续增长。", False),
        ("2022年的销售额是多少？", "销售额达到30亿元。", False),  # names no year: nothing to contradict
        ("销售额是多少？", "2023年销售额达到30亿元。", False),  # asks no year
        ("2023年出台了什么行动计划？", "出台《2023—2025年行动计划》。", False),  # inside a range
        ("2026年出台了什么行动计划？", "出台《2023—2025年行动计划》。", True),
    ],
)
def test_year_conflict(question, answer, conflict):
    assert year_conflict(question, answer) is conflict


@pytest.mark.parametrize(
    ("question", "sentence", "rival"),
    [
        ("东湖街道有多少家企业？", "西湖街道有120家企业。", True),  # another 街道
        ("东湖街道有多少家企业？", "东湖街道和西湖街道共有120家企业。", False),  # names the one asked too
        ("文化中心的展览馆有多大？", "阅览馆面积达800平方米。", True),  # another 馆; the stem stops at 的
        ("东湖街道有多少家企业？", "该街道有120家企业。", False),  # a demonstrative names nothing else
        ("东湖高新区有多少家企业？", "东湖新区有120家企业。", False),  # other kinds of name
        ("星光公司的董事长是谁？", "星光科技公司董事长王某表示……", False),  # a longer form of the same name
        # A name does not run over a function word or a question word.
        ("落户在青萝新区的企业有多少家？", "落户到青萝新区的企业有120家。", False),
        ("落户在青萝新区的企业有多少家？", "落户到白沙新区的企业有120家。", True),
        ("青萝区和哪个工业园区开展合作？", "青萝区与白沙工业园区开展合作。", False),
    ],
)
def test_a_sentence_naming_a_rival_of_the_kind_asked(question, sentence, rival):
    assert names_a_rival(question, sentence) is rival


def test_words_before_a_kind_that_name_nothing_are_no_rival(service):
    """The judge tells a name's stem from a verb before the kind ("推进开发区", "不断扩大社区") by
    the tokenizer: a corpus word, a proper noun or a word jieba does not know."""
    judge = service.require().pipeline.judge
    question = "江山经济开发区去年的产值是多少？"
    assert names_a_rival(question, "要加快推进开发区转型。")  # without the tokenizer, 加快推进 is a name
    assert not names_a_rival(question, "要加快推进开发区转型。", judge._names_something)
    assert names_a_rival(question, "路桥经济开发区去年的产值是100亿元。", judge._names_something)


@pytest.mark.parametrize(("question", "passage", "named"), [
    ("青萝高新区（东湖）有多少家企业？", "高新区(东湖)有120家企业。", True),
    ("青萝高新区（东湖）有多少家企业？", "东湖高新区有120家企业。", True),
    ("青萝高新区（东湖）有多少家企业？", "青萝高新区有120家企业。", True),
    ("青萝高新区（东湖）有多少家企业？", "高新区(西湖)有120家企业。", False),
    ("青萝高新区有多少家企业？", "高新区有120家企业。", False),
])
def test_a_zone_is_named_by_its_name_or_its_bracketed_district(question, passage, named):
    question = normalize_width(question)
    (name,) = zone_names(question)
    assert zone_named(name, question, passage) is named


def test_a_place_the_sources_never_name_is_not_answered(service):
    """The closest passage is about another county or zone: the judge reads that as a signal,
    and the answer about the place the sources never name is less sure than the one they do."""
    state = service.require()
    known = service.ask("缙云县的网约车行业联合会覆盖了多少名司机？")
    for question, place in [
        ("青田县的网约车行业联合会覆盖了多少名司机？", "青田"),
        ("平湖经济技术开发区去年的固定资产投资是多少亿元？", "平湖"),
    ]:
        assert state.pipeline.judge.unknown_place(state.pipeline.queries.build(question)) == place
        assert service.ask(question).confidence < known.confidence, question
    # The same question about the county the sources do cover is answered.
    assert not known.abstained and "300" in known.text
    # Words ending like place names that name no place are not taken for one.
    for question in [
        "杭州医药港请了哪位教授当荣誉镇长？",
        "杭州这座大都市的综合保税区面积有多少平方公里？",
        "在全省各市县中，唯一同时拥有经开区、高新区、综保区、自贸区的产业大平台是哪个？",
        "借壳上市的企业有几家？",
        "江山经济开发区有几个部门在开发区合署办公？",
        "贫困县有多少个？",
    ]:
        assert state.pipeline.judge.unknown_place(state.pipeline.queries.build(question)) is None, question
    # A zone named after a word the question starts with, or by its short name, is still found.
    query = state.pipeline.queries.build("去年平湖经开区完成固定资产投资多少亿元？")
    assert state.pipeline.judge.unknown_place(query) == "平湖"
