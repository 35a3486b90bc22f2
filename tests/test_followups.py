"""Follow-up rewriting on the real tokenizer, index and judge: which turns lean on the ones
before, what a pronoun or a demonstrative stands for, and how a turn that might or might not
be a follow-up is read. The questions are invented for these tests (none is a gold question)."""

from __future__ import annotations

import pytest

from rag.query import Turn

Q_ENTITY = "钱塘新区哪个产业平台主攻半导体产业？"


def rewrite(service, *texts: str) -> tuple[str, bool]:
    """The last turn of a chat whose turns alternate user, assistant, user, … as rewritten."""
    turns = [Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    query = service.require().pipeline.queries.from_turns(turns)
    return query.text, query.rewritten


def test_a_turn_that_names_nothing_asks_about_the_previous_subject(service):
    assert rewrite(service, "杭州医药港是哪一年挂牌的？", "2018年5月。", "规划面积是多少？") == (
        "杭州医药港规划面积是多少？", True)


def test_a_turn_that_names_its_own_subject_stands_alone(service):
    assert rewrite(service, "杭州医药港是哪一年挂牌的？", "2018年5月。", "杭州综合保税区有多少家企业？") == (
        "杭州综合保税区有多少家企业？", False)


def test_a_turn_opened_by_na_that_names_its_own_subject_asks_about_it(service):
    """"那大创小镇重点发展什么？" moves the talk on to 大创小镇; the previous subject is not put
    in front of it."""
    assert rewrite(service, "钱塘新区的前进智造园有多少家企业？", "…", "那江东芯谷主攻什么产业？") == (
        "江东芯谷主攻什么产业？", True)


@pytest.mark.parametrize(("question", "subject"), [
    ("东南网架在钱塘新区的总部大楼有多高？", "东南网架"),  # not "…在钱塘新区"
    ("钱塘新区把辖区企业分成了哪几类？", "钱塘新区"),
    ("钱塘新区这轮平台改革是为了什么？", "钱塘新区"),
    ("西湖科技园的核心区有多大？", "西湖科技园"),  # a name still grows to its suffix
    ("钱塘新区为科创企业上市开了什么绿色通道？", "钱塘新区"),  # not "…为科创企业上市"
])
def test_a_subject_does_not_grow_over_a_preposition_or_demonstrative(service, question, subject):
    assert service.require().pipeline.queries.topic(question) == subject


@pytest.mark.parametrize(
    ("first", "answer", "follow_up", "expected"),
    [
        # The demonstrative and its noun are one thing, named before: not "杭州综合保税区综保区".
        ("杭州综合保税区是哪一年获批的？", "2018年2月。", "这个综保区有多少家企业？", "杭州综合保税区有多少家企业？"),
        # 该县 is the county named before; 有 stays a verb.
        ("淳安县的石林镇在哪里？", "在淳安县西部。", "该县有多少人口？", "淳安县有多少人口？"),
    ],
)
def test_a_demonstrative_stands_for_the_earlier_name_of_its_kind(service, first, answer, follow_up, expected):
    assert rewrite(service, first, answer, follow_up) == (expected, True)


def test_it_is_the_answer_they_are_the_ones_asked_about(service):
    """After "which platform…" is answered with a name, "它" is that platform; "他们" is the
    organisation the question was about."""
    answer = service.ask(Q_ENTITY).text
    assert answer.startswith("江东芯谷")
    assert rewrite(service, Q_ENTITY, answer, "它有多少家企业？")[0] == "江东芯谷有多少家企业？"
    assert rewrite(service, Q_ENTITY, answer, "他们有多少家企业？")[0] == "钱塘新区有多少家企业？"


def test_a_place_answer_is_not_what_the_next_turn_asks_about(service):
    # "总部设在哪里" is answered with a place; "它的董事长" still means the company.
    text, _ = rewrite(service, "米奥会展的总部设在哪里？", "杭州滨江区。", "它的董事长叫什么？")
    assert text == "米奥会展的董事长叫什么？"


def test_an_earlier_subject_is_still_a_candidate_two_turns_on(service):
    """A turn in between that names something else of another kind does not hide the park the
    chat began with from "这个园区"."""
    text, _ = rewrite(service, "杭州医药港是哪一年挂牌的？", "2018年5月。", "辉瑞是哪一年进驻的？", "2019年。",
                      "这个园区有多少家企业？")
    assert text == "杭州医药港有多少家企业？"


def test_the_subject_grows_over_the_words_the_articles_write_with_it(service):
    # jieba splits 贵州 | 电商 | 云; the articles write 贵州电商云 together, so it is one subject.
    text, _ = rewrite(service, "贵州电商云在疫情期间服务了多少客户？", "…", "它一季度增长了多少？")
    assert text == "贵州电商云一季度增长了多少？"


@pytest.mark.parametrize(("first", "follow_up", "expected"), [
    # What a place holds is the subject, not the place: "钱塘新区的格林达" is about 格林达.
    ("钱塘新区的格林达主要生产什么化学品？", "它位于哪个园区？", "格林达位于哪个园区？"),
    # A part of the place is not: "江东芯谷的核心区块" is still about 江东芯谷.
    ("江东芯谷的核心区块在哪里？", "它主攻什么产业？", "江东芯谷主攻什么产业？"),
    # A name in quotation marks is the whole quoted name, not its first word.
    ("“云惠钱塘·嗨购全球”跨境消费节在哪里举办？", "它是哪天启动的？", "云惠钱塘·嗨购全球是哪天启动的？"),
])
def test_the_subject_is_what_the_question_asks_about(service, first, follow_up, expected):
    text, _ = rewrite(service, first, "…", follow_up)
    assert text == expected


@pytest.mark.parametrize(("first", "follow_up", "expected"), [
    # The attribute asked before, of another subject.
    ("杭州医药港的核心区块面积是多少？", "那江东芯谷的核心区块呢？", "江东芯谷的核心区块面积是多少？"),
    # Another attribute, asked the way the previous question asked.
    ("青萝湾园区的成果产业化基地有多大？", "那大创小镇的规划面积呢？", "大创小镇的规划面积有多大？"),
])
def test_an_ellipsis_naming_subject_and_attribute_asks_the_previous_question_of_them(service, first, follow_up,
                                                                                      expected):
    text, _ = rewrite(service, first, "…", follow_up)
    assert text == expected


def test_the_kind_a_question_word_asks_about_is_no_subject(service):
    builder = service.require().pipeline.queries
    assert builder.topic("这次大会是在哪个城市举办的？") is None  # 城市 is what is asked
    assert builder.topic("钱塘新区哪个产业平台主攻半导体产业？") == "钱塘新区"


@pytest.mark.parametrize(("question", "subject"), [
    ("高新区（滨江）今年引进了多少家企业？", "高新区（滨江）"),
    ("青萝湾（杭州）今年的产值是多少？", "青萝湾（杭州）"),
    ("中国（波兰）国际贸易数字博览会在哪里举办？", "中国（波兰）国际贸易数字博览会"),
])
def test_a_bracketed_part_belongs_to_the_subject(service, question, subject):
    """The district of a zone or the country of a fair in brackets is part of its name: a
    follow-up about 高新区（滨江） must not ask about another 高新区."""
    assert service.require().pipeline.queries.topic(question) == subject
    text, _ = rewrite(service, question, "…", "那里有多少家上市公司？")
    assert text.startswith(subject)


def test_a_quoted_name_takes_the_place_of_the_previous_questions(service):
    text, _ = rewrite(service, "钱塘的“观察”监管针对哪些经营主体？", "…", "那“休眠”监管呢？")
    assert text == "钱塘的“休眠”监管针对哪些经营主体？"


def test_the_subject_a_rewrite_put_in_counts_less_than_the_words_asked(service):
    builder = service.require().pipeline.queries
    query = builder.from_turns([Turn("user", "杭州医药港是哪一年挂牌的？"), Turn("assistant", "2018年5月。"),
                                Turn("user", "它的规划面积是多少？")])
    weights = {word: weight for word, _, weight in query.terms}
    assert weights["杭州医药港"] == builder.config.given_term_weight < weights["面积"] == 1.0
    # Typed by the user, the same subject counts in full.
    alone = builder.from_text("杭州医药港的规划面积是多少？")
    assert {word: weight for word, _, weight in alone.terms}["杭州医药港"] == 1.0


def test_a_turn_that_may_be_a_follow_up_is_answered_the_way_the_judge_believes(service):
    """"去年营收达到了多少？" names a word of its own (营收), yet after a question about a company
    it asks about that company: both readings are answered and the surer one is given."""
    first = "乐链成立于哪一年？"
    turns = [Turn("user", first), Turn("assistant", service.ask(first).text), Turn("user", "去年营收达到了多少？")]
    readings = service.require().pipeline.queries.readings(turns)
    assert [q.text for q in readings] == ["去年营收达到了多少？", "乐链去年营收达到了多少？"]
    answer = service.chat(turns)
    pipe = service.require().pipeline
    confidences = [pipe.answer(q, 5).confidence for q in readings]
    assert answer.confidence == pytest.approx(max(confidences))
    assert answer.question == "乐链去年营收达到了多少？" and "乐链" in answer.citations[0].text
    # A first turn has one reading.
    assert len(pipe.queries.readings([Turn("user", first)])) == 1


def test_near_the_previous_citation_a_sentence_need_not_repeat_the_subject(service):
    """"我们正式入驻钱塘…" answers when it follows the sentence the previous answer cited about
    the group: the conversation has named it, so the sentence covers the question in full."""
    import dataclasses

    first = "米兰华夏集团的总部在哪个城市？"
    turns = [Turn("user", first), Turn("assistant", service.ask(first).text), Turn("user", "他们什么时候正式入驻钱塘的？")]
    pipe = service.require().pipeline
    query = pipe.queries.from_turns(turns)
    assert query.text == "米兰华夏集团什么时候正式入驻钱塘的？" and set(query.given) == {"米兰", "华夏", "集团"}
    answer = pipe.answer(query, 5)
    assert not answer.abstained and "2022年7月1日" in answer.text

    def coverage(q):
        hits = pipe.retrieve(q, pipe.answer_passages)
        return next(c.coverage for c in pipe.reader.read(q, hits) if "2022年7月1日" in c.sentence.text)

    # Without the history the sentence lacks the group's name: it covers less of the question.
    assert coverage(query) > coverage(dataclasses.replace(query, near="")) + 0.2


def test_the_next_turn_leans_on_the_reading_the_answer_took(service):
    """"开年营收达到了多少？" names a word of its own (jieba's 开年), yet was answered about 乐链
    (:meth:`QueryBuilder.readings`). The answer names 乐链 and not 开年, so "它" in the turn after
    is 乐链, not 开年."""
    first, second = "乐链成立于哪一年？", "开年营收达到了多少？"
    turns = [Turn("user", first), Turn("assistant", service.ask(first).text), Turn("user", second)]
    answer = service.chat(turns)
    assert answer.question == "乐链开年营收达到了多少？"
    turns += [Turn("assistant", answer.text), Turn("user", "它的总部在哪里？")]
    assert rewrite(service, *(t.content for t in turns)) == ("乐链的总部在哪里？", True)
    # Had the answer been about 开年, the turn after would ask about it.
    turns[3] = Turn("assistant", "开年营收达到一亿元。")
    assert rewrite(service, *(t.content for t in turns)) == ("开年的总部在哪里？", True)


def test_he_or_she_is_the_person_the_previous_answer_named(service):
    """"她" stands for the person an answer named, not for the race the chat began with; with no
    person named, the pronoun stays and the subject goes in front."""
    assert rewrite(service, "青萝湾马拉松的冠军是谁？", "吕晓帆。获奖的选手叫吕晓帆，是一名90后。",
                   "她跑完全程用了多长时间？") == ("吕晓帆跑完全程用了多长时间？", True)
    text, rewritten = rewrite(service, "青萝湾马拉松是哪天开赛的？", "3月26日。青萝湾马拉松于3月26日开赛。",
                              "她跑完全程用了多长时间？")
    assert rewritten and text.startswith("青萝湾") and text.endswith("她跑完全程用了多长时间？")
    # 其他 and 他人 are no pronouns.
    assert rewrite(service, "青萝湾马拉松是哪天开赛的？", "3月26日。", "杭州综合保税区的其他企业有多少家？")[1] is False


def test_a_turn_asking_how_it_was_before_is_also_read_as_the_previous_question(service):
    """"原来需要多久？" after "…压缩到了多久？" asks the previous question of the time before the
    change: it is read that way too, and the judge's surer answer is given."""
    turns = [Turn("user", "青萝湾把审批时限压缩到了多久？"), Turn("assistant", "3个月。青萝湾把审批时限从12个月压缩至3个月。"),
             Turn("user", "原来需要多久？")]
    readings = [q.text for q in service.require().pipeline.queries.readings(turns)]
    assert len(readings) == 2 and readings[1] == "原来需要多久，青萝湾把审批时限压缩到了多久？"
    # A turn that asks another attribute is not read as the previous question.
    turns[-1] = Turn("user", "规划面积有多大？")
    assert len(service.require().pipeline.queries.readings(turns)) == 1


@pytest.mark.parametrize(("question", "subject"), [
    ("鹰眼电器制品（杭州）有限公司是哪一年成立的？", "鹰眼电器制品（杭州）有限公司"),  # jieba splits it
    ("青萝湾区的鹰眼(杭州)科技有限公司有多少员工？", "鹰眼(杭州)科技有限公司"),  # a place's own
])
def test_a_companys_full_name_is_the_subject(service, question, subject):
    assert service.require().pipeline.queries.topic(question) == subject


def test_a_question_word_before_a_company_kind_names_no_company(service):
    assert "哪个" not in (service.require().pipeline.queries.topic("这家公司隶属于哪个集团？") or "")


def test_an_ellipsis_naming_another_figure_keeps_the_subject(service):
    """"规上工业总产值呢？" asks the same zone for another figure: jieba not knowing 规上 does not
    make the figure a name that takes the zone's place. The turn after still has the zone to
    lean on, though it names a figure of its own."""
    first, answer = "青萝湾开发区去年完成固定资产投资多少？", "36.5亿元。去年，青萝湾开发区完成固定资产投资36.5亿元。"
    assert rewrite(service, first, answer, "规上工业总产值呢？") == (
        "规上工业总产值，青萝湾开发区去年完成固定资产投资多少？", True)
    turns = [Turn("user", first), Turn("assistant", answer), Turn("user", "规上工业总产值呢？"),
             Turn("assistant", "600亿元。"), Turn("user", "占全区规上工业总产值的比重是多少？")]
    readings = [q.text for q in service.require().pipeline.queries.readings(turns)]
    assert readings[-1] == "青萝湾开发区占全区规上工业总产值的比重是多少？"
