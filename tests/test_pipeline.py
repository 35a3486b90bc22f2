"""The answer path's stages on the real model and index: follow-up rewriting, the lead
value, the judge's probability and its file, and what an abstaining answer offers in
every interface (/ask, /chat, /v1 and the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest

from rag import lang
from rag.judge import JudgeError, JudgeModel
from rag.query import Turn
from rag.reader import group_text

Q_ENTITY = "钱塘新区哪个产业平台主攻半导体产业？"
Q_UNIT_MISS = "杭州医药港已集聚各类生物医药企业多少吨？"  # a unit the sources never use for it
# A county the sources never name, asked in a unit nothing is counted in: far below any threshold.
Q_ABSENT = "青田县的网约车联合会覆盖了多少吨司机？"


def test_entity_question_leads_with_the_name_the_cited_sentence_gives(service):
    answer = service.ask(Q_ENTITY)
    assert not answer.abstained
    assert answer.lead == "江东芯谷" and answer.text.startswith("江东芯谷。")
    assert any(answer.lead in c.text for c in answer.citations)


@pytest.mark.parametrize(("question", "lead"), [
    ("在青萝湾从事无人机业务的是哪家公司？", "鹰眼(杭州)科技有限公司"),  # jieba splits the name
    ("青萝湾哪家企业从事无人机业务？", "鹰眼(杭州)科技有限公司"),
    ("鹰眼(杭州)科技有限公司扎根于哪个园区？", None),  # the question's own subject
    ("青萝湾的哪个高新区有无人机企业？", None),  # asks no company
])
def test_a_company_question_leads_with_the_companys_full_name(service, question, lead):
    pipe = service.require().pipeline
    sentence = "扎根于青萝湾的鹰眼(杭州)科技有限公司是国内无人机领域的探索者。"
    assert pipe.writer.lead(pipe.queries.from_text(question), sentence) == lead


@pytest.mark.parametrize(("sentence", "lead"), [
    ("据了解，2019年10月，青萝湾街道分别在两个村设立了中心警务站。", "2019年10月"),  # the date opens it
    ("青萝湾街道于2019年10月设立了中心警务站。", "2019年10月"),  # the date right before the verb
    ("2018年青萝湾街道开始筹备，2019年10月设立了中心警务站。", None),  # two dates: which one?
])
def test_a_date_question_leads_with_the_only_date_the_sentence_gives(service, sentence, lead):
    pipe = service.require().pipeline
    query = pipe.queries.from_text("青萝湾街道的中心警务站是什么时候设立的？")
    assert pipe.writer.lead(query, sentence) == lead


def test_a_value_before_what_it_measures_leads_when_it_is_the_only_one_of_its_kind(service):
    pipe = service.require().pipeline
    query = pipe.queries.from_text("青萝湾产业园的规划面积有多大？")
    assert pipe.writer.lead(query, "以3.2平方公里为规划范围，青萝湾产业园将建设研发总部区。") == "3.2平方公里"
    # Two areas: which one is the park's is not for the lead to guess.
    assert pipe.writer.lead(query, "以3.2平方公里为核心、5平方公里为拓展，青萝湾产业园将建设研发总部区。") is None


@pytest.mark.parametrize(("question", "lead"), [
    ("青萝湾公司的内销占比升到了多少？", "40%"),  # where it went
    ("青萝湾公司的内销占比原来是多少？", "8%"),  # where it started
])
def test_a_change_leads_with_the_value_asked_however_it_is_worded(service, question, lead):
    pipe = service.require().pipeline
    sentence = "试点以来，青萝湾公司的内销占比从原来的8%直升40%。"
    assert pipe.writer.lead(pipe.queries.from_text(question), sentence) == lead


@pytest.mark.parametrize(
    ("question", "lead"),
    [
        ("南卡口让货车通关时间缩短到了几秒？", "5秒"),  # "从75秒缩减至5秒": where it went
        ("南卡口建成前货车通关要多少秒？", "75秒"),  # where it started
        ("杭州医药港已集聚各类生物医药企业多少家？", "1000余家"),
    ],
)
def test_number_lead_is_the_value_asked_and_stated_in_the_citation(service, question, lead):
    answer = service.ask(question)
    assert not answer.abstained
    assert answer.lead == lead and answer.text.startswith(lead + "。")
    assert any(lead in c.text for c in answer.citations)


@pytest.mark.parametrize(("question", "lead"), [
    ("园区驿站惠及多少家企业？", "1500余家"),  # the value right before the noun counted
    ("园区驿站惠及多少名职工？", "3万余名"),  # a whole number, not "万余名" from inside "3万余名"
    ("园区和几大集团签了约？", "两大"),  # counted the way articles count what they list
])
def test_the_lead_is_the_value_of_the_noun_counted(service, question, lead):
    sentence = "截至目前，惠及园内1500余家企业和3万余名职工，并与两大集团签约。"
    pipe = service.require().pipeline
    assert pipe.writer.lead(pipe.queries.from_text(question), sentence) == lead


def test_the_value_of_the_noun_counted_is_counted_in_the_measure_asked(service):
    """"多少项改革任务" is not answered by "十大" of "十大改革机制", which stands before 改革 too."""
    pipe = service.require().pipeline
    query = pipe.queries.from_text("青萝湾这轮改革安排了多少项改革任务？")
    assert pipe.writer.lead(query, "完善“十大改革机制”，共涉及111项改革任务。") == "111项"
    assert pipe.writer.lead(query, "完善十大改革机制。") is None


@pytest.mark.parametrize(("sentence", "lead"), [
    ("园区员工中外地人占1/3。", "1/3"), ("园区员工中外地人约占三分之一。", "三分之一"), ("园区员工中外地人占35%。", "35%"),
])
def test_a_fraction_states_a_share(service, sentence, lead):
    question = "园区员工里外地人占多大比例？"
    assert not lang.lacks_value(lang.value_check(question), sentence)
    pipe = service.require().pipeline
    assert pipe.writer.lead(pipe.queries.from_text(question), sentence) == lead
    # Two years with a slash are no fraction.
    assert lang.lacks_value(lang.value_check(question), "园区员工来自2020/2021年度招聘。")


@pytest.mark.parametrize(("question", "sentence", "states"), [
    ("园区当初划出了多大面积的土地？", "1951年在校内划出了约250公顷的土地。", True),  # hectares are an area
    ("这台设备重多少公斤？", "设备重1.4千克。", True),  # the same unit by its other name
    ("这台设备重多少公斤？", "设备长1.4米。", False),
    ("新建光伏电站装机多少千瓦？", "电站装机容量达500千瓦。", True),
    # A question for the day needs a day: a month or a year, or "一号" of a name, is none.
    ("新车是哪一天下线的？", "新车将于4月18日下线。", True),
    ("新车是几月几号下线的？", "新车将于4 月 18 号下线。", True),
    ("新车是哪一天下线的？", "今年，多款新车相继下线。", False),
    ("大会是哪天召开的？", "2023年，园区召开“一号改革工程”大会。", False),
    ("新车是哪一年下线的？", "今年，多款新车相继下线。", True),  # a year question is answered by a year
    # A count in a measure word of its own is answered in it, its kin or a generic count.
    ("工厂一年生产多少台洗衣机？", "工厂年产洗衣机200万台。", True),
    ("工厂一年生产多少台洗衣机？", "工厂投资超过200万元升级生产线。", False),  # money counts no machines
    ("调解员调解了多少起纠纷？", "他是社区的一名人民调解员。", False),
    ("公司有多少名员工？", "公司现有员工3000余人。", True),  # 名 and 人 count people alike
    ("园区有几家医院？", "园区布局了三大医院。", True),  # a generic count
    ("街区入驻了多少家商户？", "这是商圈第一个商业综合体。", False),  # an ordinal counts nothing
    ("方案推出了哪几项行动？", "方案推出政务提质、金融助力等行动。", True),  # 哪几项 asks which, not how many
    # An area is answered in a unit of area, however the question asks for it.
    ("仓库面积有多大？", "仓库建成后为企业多了一种仓储选择。", False),
    ("仓库的建筑面积是多少？", "仓库建筑面积达5200平方米。", True),
    ("项目占地多大面积？", "项目规划建设46.2万方空间载体。", True),
    ("园区面积有多大？", "园区与企业三方联动。", False),
])
def test_units_of_measure_state_the_value_asked(question, sentence, states):
    assert lang.lacks_value(lang.value_check(question), sentence) is not states


@pytest.mark.parametrize(("question", "counts"), [
    ("园区有几个社区？", True), ("园区有几大主导产业？", True), ("园区推出了哪几个计划？", False),  # which ones
    ("这几年园区主攻哪类产业？", False), ("近几年园区引进了哪些企业？", False), ("有十几家企业入驻的是哪个园区？", False),
])
def test_only_a_question_of_how_many_asks_for_a_count(question, counts):
    check = lang.value_check(question)
    assert (check is not None and check.kind == "number") is counts


@pytest.mark.parametrize(("sentence", "states"), [
    ("六大产业平台正式亮相。", True),  # counted the way lists are
    ("之前来参加过两三次。", True),
    ("园区举办了第一期对接会。", False),  # an ordinal counts nothing
    ("园区上线了“协助执行一件事”应用。", False),  # a name, not a count
    ("园区引进了一大批企业。", False),
])
def test_what_counts_as_a_count(sentence, states):
    assert lang.lacks_value(lang.value_check("园区有多少个？"), sentence) is not states


def test_a_question_for_several_things_is_not_answered_by_a_sentence_naming_one(service):
    """"有哪些" asks for several things: a sentence that lists none ("A、B", "“A”“B”") lacks
    what is asked, like a sentence without a number for "多少"; a question for one thing asks no
    list, nor does one for several values ("哪几年")."""
    pipe = service.require().pipeline

    def misses(question):
        query = pipe.queries.from_text(question)
        return {s.text: f.type_miss for s, _, _, f in pipe.reader.features(query, pipe.retrieve(query, 5))}

    listed = misses("钱塘新区的产业平台有哪些？")
    assert {m for t, m in listed.items() if "、" in t} == {0.0}
    assert {m for t, m in listed.items() if not lang.ENUMERATION.search(t)} == {1.0}
    assert set(misses("钱塘新区的哪个产业平台主攻新材料？").values()) == {0.0}
    assert lang.list_check("园区在哪几年扩建过？") is None and lang.list_check("园区有哪几个？") is not None


@pytest.mark.parametrize(("question", "asks"), [
    ("园区有哪些配套设施？", True), ("这三个平台分别叫什么？", True), ("设在哪几个村？", True),
    ("园区有哪个配套设施最受欢迎？", False), ("园区有多少配套设施？", False),
])
def test_which_questions_ask_for_a_list(question, asks):
    assert bool(lang.ASKS_LIST.search(question)) is asks


def test_a_label_value_line_is_no_heading(service):
    """A list states its facts as "label: value" lines without a full stop; a heading states none."""
    pipe = service.require().pipeline
    query = pipe.queries.from_text("政务领域有多少项改革任务？")
    hits = pipe.retrieve(query, pipe.answer_passages)
    rows = {sent.text: f for sent, _, _, f in pipe.reader.features(query, hits)}
    item = next(t for t in rows if t.startswith("政务领域："))
    assert rows[item].heading == 0.0
    assert any(f.heading == 1.0 for t, f in rows.items() if not lang.LABELLED.search(t))


@pytest.mark.parametrize(("question", "answer", "conflict"), [
    ("第二届青萝湾论坛是什么时候举办的？", "首届青萝湾论坛于2019年举办。", True),  # 首届 is the first
    ("青萝湾平台二期计划什么时候建成？", "青萝湾平台（一期）已建成。", True),  # a project's phase
    ("第一期对接会在哪里举办？", "第五期对接会在园区举办。", True),
    ("首届论坛在哪里举办？", "第一届论坛在杭州举办。", False),  # the same edition, written otherwise
    ("第二批项目有多少个？", "首批18个项目、第二批20个项目已签约。", False),  # it names the one asked too
    ("第十二届会议在哪里召开？", "第12届会议在杭州召开。", False),
    ("第六代车型何时下线？", "第六代车型将于今年下线。", False),
    ("2019年园区产值多少？", "2020年园区产值100亿元。", True),  # a year, as before
    ("青萝湾长跑赛的亚军是谁？", "冠军仅用1小时05分就跑完了全程。", True),  # a place in a ranking
    ("大赛的二等奖是哪家企业？", "大赛一等奖由青萝湾公司获得。", True),
    ("大赛的冠军用了多长时间？", "冠军仅用1小时05分就跑完了全程。", False),
    ("青萝湾研究所去年招了多少研究生？", "今年将招收研究生近50名。", True),  # a year named from now
    ("青萝湾研究所今年招了多少研究生？", "今年将招收研究生近50名，去年招了30名。", False),
    ("对市级认定的基地奖补多少？", "对经省级部门认定的基地，每个奖补3万元。", True),  # another level
    ("对省级认定的基地奖补多少？", "对经省级部门认定的基地，每个奖补3万元。", False),
    ("园区有多少家省级以上孵化器？", "园区累计建成省级以上孵化器4家。", False),
])
def test_an_answer_about_another_edition_or_year_conflicts(question, answer, conflict):
    assert lang.year_conflict(question, answer) is conflict


@pytest.mark.parametrize(("text", "name"), [
    ("在青萝湾医药董事长柯晓岚看来，现阶段要抢抓机遇。", "柯晓岚"),  # "…看来", not a verb of saying
    ("青萝湾生物董事长倪远航也持有相似观点。", "倪远航"),
    ("总经理祝和平和同事们一起说明了情况。", "祝和平"),
    # The name is followed by whatever the sentence goes on with, not only a verb of saying.
    ("青萝湾物流总经理吕晓帆在接受采访时说起往事。", "吕晓帆"),
    ("园区管理局局长邵明川用四个字概括了园区的变化。", "邵明川"),
    ("青萝湾区党委书记、管委会主任单立衡表示，改革要坚持问题导向。", "单立衡"),
    ("青萝村人大代表阮志远面对家乡的变化十分感慨。", "阮志远"),
    ("区委书记高度重视这项工作，要求各部门协同推进。", None),
    ("获奖的选手叫吕晓帆，是一名90后。", "吕晓帆"),  # introduced by name
    ("飞跃·青萝湾女子半程马拉松于5月开赛。", None),  # a brand and an event, not a foreign name
    ("总经理助理在会上介绍了情况。", None),
    ("青萝湾区委书记倪远航与企业家代表座谈。", "倪远航"),  # 与 goes on with the sentence
    ("倪远航董事长说，订单已经排到明年。", "倪远航"),  # the role between name and verb of saying
    ("董事长说，订单已经排到明年。", None),  # 董 is a surname, 董事长 no name
    ("首场“青萝湾倾听·暖企夜话”恳谈会开幕。", None),  # a quoted title, not a foreign name
])
def test_a_person_named_after_a_role(text, name):
    assert lang.person(text) == name


def test_who_is_not_answered_by_the_person_the_question_names():
    text = "3月，管委会副主任柯晓岚带队赴外地调研，园区处长倪远航一同参加。"
    assert lang.person(text) == "柯晓岚"
    assert lang.person(text, "柯晓岚带队调研时有谁同行？") is None  # 处长 is no role of ROLES
    assert lang.person("副主任柯晓岚带队，总经理倪远航也一同参加。", "柯晓岚带队调研时有谁同行？") == "倪远航"
    assert lang.person_missing("柯晓岚带队调研时有谁同行？", text) is False  # a bare 谁: 管委会 is an agent
    assert lang.person_missing("柯晓岚带队时，同行的总经理是谁？", "副主任柯晓岚带队调研。") is True


def test_value_is_followed_by_the_sentence_stating_it(service):
    """With a second sentence cited, the one the value comes from still comes right after it."""
    answer = service.ask("杭州医药港有多少家生物医药企业？")
    assert answer.lead == "1000余家" and len(answer.citations) == 2
    assert "1000余家" in answer.citations[0].text and "1000余家" not in answer.citations[1].text
    assert "1000余家" in answer.text.removeprefix("1000余家。").split("[1]")[0]


def test_a_second_sentence_is_cited_whole_however_long_and_the_answer_kept_short(service, settings):
    """The pick cites a nearly-as-good sentence whatever its length; the writer trims what the
    answer shows to the budget, while each citation keeps the whole sentence."""
    answer = service.ask("杭州综合保税区是哪一年获批的？")
    assert len(answer.citations) == 2
    assert sum(len(c.text) for c in answer.citations) > settings.answer_max_chars
    assert len(answer.text) <= settings.answer_max_chars
    docs = service.require().data.documents
    for c in answer.citations:
        assert docs[c.doc_id].text[c.start : c.end] == c.text and c.text.endswith(lang.TERMINAL)
        assert f"[{c.id}]" in answer.text
    assert "2018年2月获批" in answer.text.split("[1]")[0]


def test_a_small_budget_shows_one_sentence_not_two_slivers(service):
    from rag.types import Verdict
    from rag.writer import ExtractiveWriter, WriterConfig

    pipe, data = service.require().pipeline, service.require().data
    query = pipe.queries.from_text("杭州医药港有多少家生物医药企业？")
    hits = pipe.retrieve(query, pipe.answer_passages)
    groups = pipe.reader.pick(pipe.reader.read(query, hits))[:2]
    assert len(groups) == 2
    for budget, shown in ((40, 1), (150, 2)):
        writer = ExtractiveWriter(data, WriterConfig(max_chars=budget), coverage=pipe.reader.coverage)
        answer = writer.write(query, Verdict(True, 0.9), groups, hits)
        assert len(answer.citations) == shown and len(answer.text) <= budget
        assert answer.text.startswith("1000余家。") and ("[2]" in answer.text) is (shown == 2)


def test_a_third_sentence_is_cited_only_in_the_room_the_first_two_leave(service):
    """Two cited texts share the budget; a third is shown when they leave room for it, and
    dropped (not squeezed in at the cost of the best sentence) when they do not."""
    from rag.types import Verdict
    from rag.writer import ExtractiveWriter, WriterConfig

    pipe, data = service.require().pipeline, service.require().data
    query = pipe.queries.from_text("杭州医药港有多少家生物医药企业？")
    hits = pipe.retrieve(query, pipe.answer_passages)
    candidates = pipe.reader.read(query, hits)
    short = [([c.sentence], c) for c in candidates if len(c.sentence.text) <= 35][:3]
    long = [([c.sentence], c) for c in candidates if len(c.sentence.text) >= 80][:3]
    assert len(short) == len(long) == 3
    writer = ExtractiveWriter(data, WriterConfig(max_chars=150), coverage=pipe.reader.coverage)
    roomy = writer.write(query, Verdict(True, 0.9), short, hits, lead="")
    assert len(roomy.citations) == 3 and "[3]" in roomy.text and len(roomy.text) <= 150
    full = writer.write(query, Verdict(True, 0.9), long, hits, lead="")
    assert len(full.citations) == 2 and "[3]" not in full.text and len(full.text) <= 150
    # The best text kept what it had with two: nothing was taken from it for the third.
    two = writer.write(query, Verdict(True, 0.9), long[:2], hits, lead="")
    assert full.text == two.text


def test_a_sentence_elsewhere_four_fifths_as_good_as_the_best_is_cited_too(service):
    from dataclasses import replace

    pipe = service.require().pipeline
    query = pipe.queries.from_text("杭州医药港有多少家生物医药企业？")
    candidates = pipe.reader.read(query, pipe.retrieve(query, pipe.answer_passages))
    best = candidates[0]
    other = next(c for c in candidates if c.sentence.doc_id != best.sentence.doc_id)
    for share, cited in ((0.82, True), (0.78, False)):
        picked = pipe.reader.pick([replace(best, score=1.0), replace(other, score=share)])
        assert (len(picked) == 2) is cited


def test_trimming_keeps_the_listing_clause_of_a_list_question(service):
    from rag.writer import ExtractiveWriter, trim_check

    pipe, data = service.require().pipeline, service.require().data
    writer = ExtractiveWriter(data, coverage=pipe.reader.coverage)
    question = "青萝湾园区“三新”产业体系中的四大服务业包括哪些？"
    query = pipe.queries.from_text(question)
    text = ("青萝湾园区将全力构建“三新”产业体系，做强高端装备、精细化工两大制造业，超前探索布局未来产业，"
            "积极发展会展策划、工业设计、人才培训、冷链物流等四大服务业，推动产城融合。")
    listing = "会展策划、工业设计、人才培训、冷链物流"
    assert listing in writer._trim(text, query, 60, trim_check(question))
    # Without the listing check the clause naming the system (more of the question's words) wins.
    assert listing not in writer._trim(text, query, 60, lang.value_check(question))
    assert trim_check("青萝湾园区的服务业增加值是多少？") == lang.value_check("青萝湾园区的服务业增加值是多少？")


@pytest.mark.parametrize(("lengths", "budget", "shares"), [
    ((20, 200), 142, [20, 122]),  # a short best leaves the rest to the other
    ((200, 200), 142, [82, 60]),  # a long best keeps what it needs but 60 for the other
    ((88, 50), 136, [86, 50]),
    ((40,), 136, [40]),
    ((100, 100, 100), 60, [20, 20, 20]),
])
def test_the_budget_goes_to_the_best_text_first(service, lengths, budget, shares):
    from rag.writer import ExtractiveWriter

    got = ExtractiveWriter(service.require().data)._shares(lengths, budget)
    assert got == shares and sum(got) <= budget


def test_a_shortened_citation_is_still_found_in_the_previous_answer(service):
    """A follow-up finds where the conversation is from the previous answer's text, which may
    show a long sentence from one of its clauses on."""
    answer = service.ask("杭州综合保税区是哪一年获批的？")
    first = answer.citations[0]
    shown = answer.text.removeprefix(f"{answer.lead}。" if answer.lead else "").split("[1]")[0]
    assert shown.startswith("…") and not shown.startswith("…" + first.text[:6])  # cut at a clause
    retriever = service.require().pipeline.retriever
    sent_ids = {s.sent_id for s in service.require().data.sentences
                if s.doc_id == first.doc_id and s.start == first.start}
    assert sent_ids and sent_ids <= retriever.cited_sentences(shown)


@pytest.mark.parametrize(("question", "name"), [
    ("杭州江东芯谷管理办公室主任是谁？", "施峰"),  # the card gives the title, then the name
    ("杭州卓矽电子科技有限公司的创始人是谁？", "秦英安"),  # the name, then company and title
    ("史陶比尔的总经理是谁？", "张振惠"),  # the name glued to the caption above the card
])
def test_who_question_leads_with_the_name_on_the_persons_card(service, question, name):
    """Interview cards print a name on a line of its own beside the job title; the answer
    cites them together and leads with the name, not with the title alone."""
    answer = service.ask(question)
    assert not answer.abstained
    assert answer.lead == name and answer.text.startswith(name + "。")
    assert name in answer.citations[0].text


@pytest.mark.parametrize(("lines", "cards"), [
    # Name first, then organisation and title; the title line before a name; a name alone.
    (["守住产业链，我们的底气更足了", "柯晓岚", "青萝湾新材料股份有限公司", "董事长兼总经理", "作为企业，我们见证了变化。"],
     [range(1, 4)]),
    (["打造智能制造新高地青萝湾智造园管理办公室主任", "祝远航", "【代表企业】"], [range(0, 2)]),
    (["园区今年新引进企业12家。", "柯晓岚", "企业家们说，这里服务好。"], []),
    # A keyword cloud of two-character lines, a title with no name beside it.
    (["数字", "经济", "董事长", "青萝湾智造园管理办公室主任", "园区今年新引进企业12家。"], []),
    # Two cards in a row: each line belongs to one.
    (["柯晓岚", "青萝湾公司总经理", "祝远航", "青萝湾公司副总经理"], [range(0, 2), range(2, 4)]),
    # The name glued to the heading above it by cleaning opens the card all the same.
    (["守住产业链，我们的底气更足了柯晓岚", "青萝湾新材料股份有限公司", "董事长兼总经理", "作为企业，我们见证了变化。"],
     [range(0, 3)]),
    # A heading that only ends like a name ("新高地") does not take the title from the name after it.
    (["打造智能制造新高地", "青萝湾智造园管理办公室主任", "祝远航"], [range(1, 3)]),
])
def test_person_cards_are_found_among_an_articles_lines(lines, cards):
    assert lang.person_cards(lines) == cards


def test_every_line_of_a_person_card_cites_the_whole_card(service):
    reader = service.require().pipeline.reader
    sents = reader.data.sentences
    name = next(s for s in sents if s.text == "施峰")
    title = sents[name.sent_id - 1]
    assert title.text.endswith("杭州江东芯谷管理办公室主任")
    assert reader.span(name) == reader.span(title) == [title, name]
    assert lang.person(group_text((reader.span(title), None))) == "施峰"
    assert lang.person("守住产业链，我们的底气更足了柯晓岚\n青萝湾新材料股份有限公司\n董事长兼总经理") == "柯晓岚"


@pytest.mark.parametrize(("question", "text", "deputy"), [
    ("青萝湾公司的总经理是谁？", "柯晓岚 青萝湾公司副总经理", True),
    ("青萝湾公司的副总经理是谁？", "柯晓岚 青萝湾公司副总经理", False),
    ("街道办事处主任是谁？", "街道党工委委员、办事处副主任 祝远航", True),
    ("青萝湾公司的总经理是谁？", "柯晓岚 青萝湾公司总经理、副总经理", False),
    ("青萝湾公司的总经理是谁？", "青萝湾公司的发展离不开政策支持", False),  # names no role: not this check
    ("哪位区政府副秘书长介绍了情况？", "区政府副秘书长祝远航介绍了情况。", False),  # asks for the deputy
])
def test_a_deputy_does_not_answer_for_the_role(question, text, deputy):
    assert lang.deputy_only(question, text) is deputy


@pytest.mark.parametrize(("question", "text", "missing"), [
    ("青萝湾公司的董事长是谁？", "青萝湾公司发展迅速，企业订单饱满。", True),  # a role holder: only a name answers
    ("青萝湾公司的董事长是谁？", "青萝湾公司董事长柯晓岚说，订单饱满。", False),
    ("企业遇到困难第一时间找谁？", "企业有困难第一时间都会寻找当地园区领导。", False),  # a bare 谁: an agent answers
    ("企业遇到困难第一时间找谁？", "园区的订单今年十分饱满。", True),
])
def test_who_is_answered_by_a_person_or_for_a_bare_who_an_agent(question, text, missing):
    assert lang.person_missing(question, text) is missing


def test_judge_sees_a_deputy_named_for_the_role_asked(service):
    pipe = service.require().pipeline

    def person_miss(question):
        query = pipe.queries.from_text(question)
        hits = pipe.retrieve(query, pipe.answer_passages)
        candidates = pipe.reader.read(query, hits)
        return pipe.judge.signals(query, hits, candidates, pipe.reader.pick(candidates))["person_miss"]

    # The card gives 副总经理; asked for the 总经理, the named person does not answer.
    assert person_miss("杭州之江新材料有限公司的总经理是谁？") == 1.0
    assert person_miss("杭州之江新材料有限公司的副总经理是谁？") == 0.0
    # Nor does the answer open with the deputy's name as if it were the one asked for.
    assert not service.ask("杭州之江新材料有限公司的总经理是谁？").lead
    assert service.ask("杭州之江新材料有限公司的副总经理是谁？").lead == "陶小乐"


def test_no_lead_in_a_unit_the_question_did_not_ask(service):
    """Whatever the judge decides, a value in another unit never opens the answer."""
    answer = service.ask(Q_UNIT_MISS)
    assert "吨" not in answer.lead and not answer.text.startswith("1000余家")
    assert answer.confidence < service.ask("杭州医药港已集聚各类生物医药企业多少家？").confidence


def test_follow_up_is_rewritten_with_the_subject_of_the_previous_answer(service):
    first = service.ask(Q_ENTITY)
    turns = [Turn("user", Q_ENTITY), Turn("assistant", first.text), Turn("user", "它的核心区块面积是多少？")]
    answer = service.chat(turns)
    assert answer.rewritten and answer.question == "江东芯谷的核心区块面积是多少？"
    # A question that stands alone is left as it is.
    alone = service.chat([Turn("user", "杭州综合保税区是哪一年获批的？")])
    assert not alone.rewritten and alone.question == "杭州综合保税区是哪一年获批的？"


def test_where_follow_up_cites_where_the_subject_lies(service):
    """The README's own follow-up: "它在哪里？" after the semiconductor question is answered by
    the sentence saying where 江东芯谷 lies, not by a heading that only names it."""
    first = service.ask(Q_ENTITY)
    answer = service.chat([Turn("user", Q_ENTITY), Turn("assistant", first.text), Turn("user", "它在哪里？")])
    assert answer.question == "江东芯谷在哪里？" and not answer.abstained
    assert "位于" in answer.citations[0].text and answer.citations[0].text.endswith("。")


@pytest.mark.parametrize(
    ("question", "asks"),
    [("江东芯谷在哪里？", True), ("投资之家设在什么地方？", True), ("它位于哪个街道？", True),
     ("这套办法的优势在哪里？", False), ("鼎龙科技在哪个领域市场份额最大？", False), ("松下的新品在哪个展会亮相？", False)],
)
def test_place_questions_are_told_from_questions_that_only_say_where(service, question, asks):
    tok = service.require().data.tokenizer
    assert lang.asks_place(question, tok.names_something) is asks
    terms = [t[0] for t in service.require().pipeline.queries.from_text(question).terms]
    assert (lang.PLACE_VERB in terms) is asks  # added when the question does not say it


@pytest.mark.parametrize(("question", "word"), [
    ("园区里有几十家企业，其中龙头企业是哪家？", "哪"), ("几乎所有企业都用了哪个平台？", "哪"),
    ("有十几家企业入驻，其中最大的是哪家？", "哪"), ("好几家企业落户的园区叫什么？", "什么"),
    ("任何企业都能申请的补贴叫什么？", "什么"), ("钱塘新区有几个产业平台？", "几"), ("何时投产？", "何"),
])
def test_the_question_word_is_not_a_numeral_or_adverb(service, question, word):
    """The asked attribute is read next to the question word, not next to 几十 or 任何."""
    from rag.reader import asked_attribute

    assert lang.QUESTION_WORD.search(question).group() == word
    query = service.require().pipeline.queries.from_text(question)
    at = question.index(word)
    attribute = asked_attribute(query)
    assert attribute and all(0 <= question.find(t[0]) for t in attribute)
    assert all(abs(question.find(t[0]) - at) <= lang.ATTRIBUTE_REACH + len(t[0]) for t in attribute)


@pytest.mark.parametrize(("text", "small"), [
    ("你好", True), ("您好！😀", True), ("谢谢你们", True), ("好的，谢谢", True), ("Thank you!", True),
    ("OK 再见", True), ("謝謝", False),  # traditional: the query builder converts it first
    ("谢谢，综保区集聚了多少家企业？", False), ("你好，江东芯谷在哪里", False), ("好的企业有哪些？", False),
    ("感谢信是谁写的？", False), ("history", False), ("？？？", False), ("", False),
])
def test_small_talk_is_the_whole_turn(text, small):
    """Only a turn that is nothing but greetings, thanks or goodbyes is small talk."""
    assert lang.small_talk(text) is small


def test_follow_up_names_the_previous_questions_subject(service):
    q1 = "杭州综合保税区是哪一年获批的？"
    a1 = service.ask(q1)
    answer = service.chat([Turn("user", q1), Turn("assistant", a1.text), Turn("user", "那里有多少家企业？")])
    assert answer.rewritten and answer.question.startswith("杭州综合保税区")


def test_follow_up_subject_is_a_name_not_a_clause_of_the_previous_question(service):
    # "上市" ends like a city's name (市): the subject must not grow across 是 or a question word.
    q1 = "米奥会展是什么时候在创业板上市的？"
    answer = service.chat([Turn("user", q1), Turn("assistant", service.ask(q1).text), Turn("user", "它的总部在哪个区？")])
    assert answer.rewritten and answer.question == "米奥会展的总部在哪个区？"


def test_rewritten_follow_up_reads_as_the_standalone_question(service):
    """Once it names its subject, a follow-up retrieves and is read as the standalone question;
    the earlier turn only adds down-weighted keywords."""
    import numpy as np

    builder = service.require().pipeline.queries
    q1 = "杭州医药港是哪一年挂牌的？"
    query = builder.from_turns([Turn("user", q1), Turn("assistant", "2018年5月。"), Turn("user", "它的规划面积是多少？")])
    alone = builder.from_text("杭州医药港的规划面积是多少？")
    assert query.rewritten and query.text == alone.text
    assert np.allclose(query.vector, alone.vector, atol=1e-5)
    assert [t[0] for t in query.terms] == [t[0] for t in alone.terms]
    earlier = {t for t, w in zip(query.tokens, query.token_weights, strict=True) if w < 1.0}
    assert "挂牌" in earlier and "挂牌" not in alone.tokens


def test_judge_reads_the_rarest_word_the_cited_passage_lacks(service):
    """Asked about an attribute no passage mentions, the judge sees a rare missing word; asked
    about one the passage states, none."""
    pipe = service.require().pipeline

    def signals(question):
        query = pipe.queries.from_text(question)
        hits = pipe.retrieve(query, pipe.answer_passages)
        candidates = pipe.reader.read(query, hits)
        return pipe.judge.signals(query, hits, candidates, pipe.reader.pick(candidates))

    stated = signals("杭州医药港已集聚各类生物医药企业多少家？")
    absent = signals("杭州医药港的蟑螂养殖场有多少家？")
    assert stated["missing_word"] < 0.5 < absent["missing_word"]
    # The kind of value missing: a date, a unit of measure (none missing when it is stated).
    assert signals("江东芯谷的核心区块是哪一年划定的？")["date_miss"] == 1.0
    assert signals("南卡口让货车通关时间缩短了多少平方公里？")["unit_miss"] == 1.0
    assert stated["date_miss"] == stated["unit_miss"] == stated["number_miss"] == 0.0
    # A sibling's figure: the attribute (建筑面积) leads the reader to a sentence stating it of
    # another hall, while the sentence about the subject itself states no area.
    sibling = signals("河庄街道文体中心的游泳馆建筑面积有多少平方米？")
    assert sibling["value_miss"] == 0.0 and sibling["plain_value_miss"] == 1.0
    assert sibling["rival_name"] == 1.0 and stated["rival_name"] == 0.0  # 文教馆 cited for 游泳馆
    assert stated["plain_value_miss"] == 0.0


def test_confidence_is_a_probability(service):
    for q in (Q_ENTITY, Q_UNIT_MISS, "今天天气怎么样？", "杭州医药港已集聚各类生物医药企业多少家？"):
        answer = service.ask(q)
        assert 0.0 <= answer.confidence <= 1.0
        judge = service.require().pipeline.judge
        assert answer.abstained == (answer.confidence < judge.threshold)


def test_judge_file_errors_name_the_command(tmp_path):
    with pytest.raises(JudgeError, match="rag judge fit"):
        JudgeModel.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(JudgeError, match="rag judge fit"):
        JudgeModel.load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": 99}), encoding="utf-8")
    with pytest.raises(JudgeError, match="format"):
        JudgeModel.load(other)


def test_abstaining_answer_offers_the_closest_passages_everywhere(base_url):
    body = httpx.post(f"{base_url}/ask", json={"question": Q_ABSENT}, timeout=30).json()
    assert body["abstained"]
    assert body["hits"] and not body["citations"] and 0 <= body["confidence"] <= 1
    chat = httpx.post(f"{base_url}/chat", json={"messages": [{"role": "user", "content": Q_ABSENT}]},
                      timeout=30).json()
    assert chat["abstained"] and chat["hits"]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    reply = client.chat.completions.create(model="hz-rag", messages=[{"role": "user", "content": Q_ABSENT}])
    text = reply.choices[0].message.content
    assert "以下是最接近的段落" in text
    assert body["hits"][0]["title"] in text and "1. 《" in text


def test_cli_ask_prints_the_closest_passages_when_it_abstains(settings):
    run = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ask", Q_ABSENT, "--json"], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["abstained"] and result["hits"]
    plain = subprocess.run([sys.executable, "-m", "rag.cli", "ask", Q_ABSENT], capture_output=True, text=True,
                           timeout=300)
    assert "以下是最接近的段落" in plain.stdout
    assert "1. 《" in plain.stdout and result["hits"][0]["doc_id"] in plain.stdout
