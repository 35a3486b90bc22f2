"""Question normalisation (rag.normalize): what is kept for display, what retrieval sees.

The rules are pinned on the pure function; the last tests ask the real service
(real model and index) and check that a traditional or pasted question finds
the same answer as the plain simplified one.
"""

from __future__ import annotations

import pytest

from rag.normalize import QuestionRejected, normalize_question, retrieval_text


@pytest.mark.parametrize(
    ("raw", "display", "text"),
    [
        ("錢塘新區哪個產業平臺主攻半導體？", "錢塘新區哪個產業平臺主攻半導體？", "钱塘新区哪个产业平台主攻半导体？"),
        ("钱塘\u200b新区\u200d在\ufeff哪里\u202e", "钱塘新区在哪里", "钱塘新区在哪里"),
        ("钱塘新区\x00在\x07哪里\x1b", "钱塘新区在哪里", "钱塘新区在哪里"),
        ("谢谢👍 钱塘新区在哪里", "谢谢👍 钱塘新区在哪里", "谢谢 钱塘新区在哪里"),
        ("👨\u200d👩\u200d👧 家庭", "👨\u200d👩\u200d👧 家庭", "家庭"),  # one picture for display
        ("1️⃣ 第一 🇨🇳", "1️⃣ 第一 🇨🇳", "1 第一"),  # keycap, flag: emoji parts go too
        ("π是多少", "π是多少", "π是多少"),
        ("杭州の医薬港はどこ", "杭州の医薬港はどこ", "杭州の医薬港はどこ"),  # kana kept
        ("Москва и Ελλάδα", "Москва и Ελλάδα", "Москва и Ελλάδα"),
        ("面积多少㎡，气温几℃，第№1", "面积多少㎡，气温几℃，第№1", "面积多少㎡，气温几℃，第№1"),  # symbols, not emoji
        ("  a \t b \r\n\n c  ", "a b\nc", "a b c"),
        ("著名的企业", "著名的企业", "著名的企业"),  # simplified text is left alone
    ],
    ids=["traditional", "zero-width", "control", "emoji", "zwj-sequence", "keycap-flag", "greek", "kana",
         "cyrillic-greek", "cjk-symbols", "whitespace", "simplified"],
)
def test_display_and_retrieval_forms(raw, display, text):
    got = normalize_question(raw)
    assert (got.display, got.text) == (display, text)


@pytest.mark.parametrize("raw", ["", "   ", "\u200b\ufeff", "😀🏭", "\x00\x07", "👍\u200d👍 \n"])
def test_nothing_to_ask_is_rejected_in_chinese(raw):
    with pytest.raises(QuestionRejected, match="问题为空"):
        normalize_question(raw)


def test_length_limit_counts_the_visible_text():
    assert normalize_question("杭" * 10 + "\u200b" * 50, max_chars=10).display == "杭" * 10
    with pytest.raises(QuestionRejected, match="最多 10 个字符，收到 11 个"):
        normalize_question("杭" * 11, max_chars=10)


def test_retrieval_text_never_rejects():
    assert retrieval_text("😀") == ""
    assert retrieval_text("它們在哪裡？\u200b") == "它们在哪里？"


def test_traditional_question_finds_the_simplified_answer(service):
    # The README's question. (Without its last word, "…主攻半导体？", the reader now cites
    # "前进智造园主攻…", which shares the rare verb 主攻: a known miss, see models/embedder/README.md.)
    traditional = service.ask("錢塘新區哪個產業平臺主攻半導體產業？")
    simplified = service.ask("钱塘新区哪个产业平台主攻半导体产业？")
    assert not simplified.abstained and simplified.citations
    assert "半导体" in simplified.citations[0].text
    assert traditional.text == simplified.text
    assert traditional.citations == simplified.citations
    assert [h.chunk.chunk_id for h in traditional.hits] == [h.chunk.chunk_id for h in simplified.hits]
    assert traditional.question == "錢塘新區哪個產業平臺主攻半導體產業？"  # shown as typed


def test_traditional_follow_up_in_chat(service):
    from rag.service import Turn

    first = "錢塘新區哪個產業平臺主攻半導體？"
    turns = [Turn("user", first), Turn("assistant", service.ask(first).text), Turn("user", "它的核心區塊總面積約多少平方公里？")]
    simplified = [Turn("user", "钱塘新区哪个产业平台主攻半导体？"), turns[1], Turn("user", "它的核心区块总面积约多少平方公里？")]
    got, want = service.chat(turns), service.chat(simplified)
    assert (got.text, got.citations) == (want.text, want.citations)


def test_pasted_invisible_characters_and_emoji_do_not_change_retrieval(service):
    plain = service.search("杭州综合保税区获批于哪一年？")
    pasted = service.search("\ufeff杭州\u200b综合保税区😀获批于哪一年？\x07")
    assert [h.chunk.chunk_id for h in pasted] == [h.chunk.chunk_id for h in plain]
