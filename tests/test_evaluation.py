"""The eval command's scoring, and `rag eval` run end to end against a real server.

A scorer that is wrong makes every reported figure wrong, so its rules are
pinned here: what counts as a right answer, a citation hit, the calibrated
abstain threshold; then the command itself on a small gold file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag.evaluation import (
    GoldFormatError,
    GoldItem,
    char_f1,
    cites_evidence,
    exact_match,
    load_gold,
    metrics,
    score_item,
)
from rag.judge import auc, choose_threshold, expected_calibration_error, logistic

RAG = str(Path(sys.executable).with_name("rag"))


def item(answers=("2平方公里",), evidence="这片2平方公里的区域", split="dev") -> GoldItem:
    kind = "number" if answers else "unanswerable"
    return GoldItem("x-1", "面积有多大？", tuple(answers), evidence if answers else None,
                    "000.txt" if answers else None, kind, split)


def result(answer: str, abstained: bool = False, cited: str = "", hits=(), confidence: float = 1.0) -> dict:
    return {
        "answer": answer, "abstained": abstained, "confidence": confidence,
        "citations": [{"text": cited}] if cited else [],
        "hits": [{"text": t, "doc_id": "000"} for t in hits],
    }


def test_right_answer_ignores_width_spacing_and_trailing_zeros():
    assert score_item(item(), result("约２ 平方公里。[1]"), 0).correct
    assert score_item(item(), result("约2.0平方公里。[1]"), 0).correct  # the same number
    assert not score_item(item(), result("约2.5平方公里。[1]"), 0).correct
    assert not score_item(item(), result("约20平方公里。[1]"), 0).correct
    assert not score_item(item(), result("约12平方公里。[1]"), 0).correct  # 2 is not the tail of 12
    assert score_item(item(("2.5亿元",)), result("共2.50亿元[1]"), 0).correct
    assert not score_item(item(("2018年",)), result("20185年"), 0).correct
    # A shortened answer opens with an ellipsis, which is no decimal point; "1.2" still is one.
    assert score_item(item(), result("…2平方公里的区域，…[1]"), 0).correct
    assert not score_item(item(), result("约1.2平方公里。[1]"), 0).correct
    assert not score_item(item(), result("约2平方公里。", abstained=True), 0).correct


def test_evidence_rank_and_citation_hit():
    r = score_item(item(), result("2平方公里[1]", cited="这片2平方公里的区域，便成为引擎。",
                                  hits=["别的段落", "……这片2平方公里的区域，便成为……"]), 0)
    assert r.evidence_rank == 2 and r.citation_hit
    assert score_item(item(), result("2平方公里", hits=["别的段落"]), 0).evidence_rank is None


def test_citation_hit_needs_most_of_the_evidence_in_one_run():
    evidence = "全年产量达 12 万辆；同时新能源车型"  # runs across a sentence end
    assert cites_evidence("长安福特杭州工厂全年产量达12万辆；", evidence)  # 11 of its 16 characters
    assert not cites_evidence("同时新能源车型占比提升。", evidence)  # 6 of 16: too little
    assert not cites_evidence("", evidence)


def test_metrics_count_abstention_on_both_sides():
    answerable, unanswerable = item(), item(answers=())
    results = [
        score_item(answerable, result("2平方公里"), 0.01),
        score_item(answerable, result("没有找到", abstained=True), 0.01),
        score_item(unanswerable, result("没有找到", abstained=True), 0.01),
        score_item(unanswerable, result("瞎猜的答案"), 0.01),
    ]
    m = metrics(results)
    assert m["answer_accuracy"] == 0.5
    assert m["false_abstention"] == 0.5
    assert m["abstention"] == 0.5


def test_threshold_respects_the_false_abstention_budget():
    # 50 answerable at 0.50..0.99; 4 unanswerable at 0.1-0.4.
    probs = [0.5 + i / 100 for i in range(50)] + [0.1, 0.2, 0.3, 0.4]
    answerable = [True] * 50 + [False] * 4
    thr = choose_threshold(probs, answerable, 0.0)
    assert 0.4 < thr <= 0.5  # declines all four, withholds no answer
    # A 4% budget lets two of the fifty fall below, but declining them declines no more
    # unanswerable questions: the threshold stays below every answerable one.
    assert 0.4 < choose_threshold(probs, answerable, 0.04) <= 0.5
    # An unanswerable question among the answerable ones: the budget is spent to decline it,
    # and no further.
    thr = choose_threshold([*probs, 0.505], [*answerable, False], 0.04)
    assert 0.505 < thr < 0.51
    assert sum(p < thr for p, a in zip(probs, answerable, strict=True) if a) == 1
    # Beyond the budget it is not spent.
    thr = choose_threshold([*probs, 0.535], [*answerable, False], 0.04)
    assert 0.4 < thr <= 0.5


def test_calibration_error_and_auc():
    assert expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 10, [False] * 10) == pytest.approx(0.9)
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.1, 0.9], [True, False]) == 0.0


def test_logistic_matches_sklearn_and_keeps_a_weight_within_its_bounds():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(size=300) > 0).astype(int)
    free, icpt = logistic(x, y, 1.0, [(None, None), (None, None)])
    ref = LogisticRegression(C=1.0).fit(x, y)
    assert np.allclose(free, ref.coef_[0], atol=1e-3) and icpt == pytest.approx(ref.intercept_[0], abs=1e-3)
    # The second signal helps, but is declared a sign of a wrong answer: its weight stays at 0.
    bounded, _ = logistic(x, y, 1.0, [(0.0, None), (None, 0.0)])
    assert bounded[0] > 0 and bounded[1] == pytest.approx(0.0, abs=1e-9)


def test_calibration_recovers_the_slope_and_offset_and_keeps_the_order(tmp_path):
    import numpy as np

    from rag.judge import JudgeModel, calibrated, fit_calibration

    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=4000)
    # The judge is surer than it should be: the truth is half its log-odds, shifted down.
    right = rng.random(4000) < 1 / (1 + np.exp(-(0.5 * z - 0.3)))
    answerable = rng.random(4000) < 0.8
    slope, offset = fit_calibration(z.tolist(), right.tolist(), answerable.tolist(), 0.2)
    assert slope == pytest.approx(0.5, abs=0.08) and offset == pytest.approx(-0.3, abs=0.15)
    assert calibrated(1.0, (slope, offset)) < calibrated(2.0, (slope, offset))
    model = JudgeModel(("margin",), (0.0,), (1.0,), (1.0,), 0.0, 0.5, {}, (slope, offset))
    assert model.probability({"margin": 0.0}) == pytest.approx(calibrated(0.0, (slope, offset)))
    model.save(tmp_path / "judge.json")
    assert JudgeModel.load(tmp_path / "judge.json").calibration == (slope, offset)
    with pytest.raises(ValueError, match="both answerable and unanswerable"):
        fit_calibration([0.0, 1.0], [True, False], [True, True], 0.2)


def test_exact_match_and_char_f1_follow_cmrc():
    assert exact_match("江东芯谷", ["江东芯谷"]) and exact_match("１.４千克。", ["1.4千克"])
    assert not exact_match("江东芯谷产业园", ["江东芯谷"])
    assert char_f1("江东芯谷产业园", ["江东芯谷"]) == pytest.approx(2 * (4 / 7) * 1 / (4 / 7 + 1))
    assert char_f1("无关", ["江东芯谷"]) == 0.0


def test_rag_eval_against_a_real_server(base_url, tmp_path):
    gold = tmp_path / "gold.jsonl"
    rows = [
        {"id": "t-1", "question": "杭州医药港已集聚各类生物医药企业多少家？", "answers": ["1000余家"],
         "evidence": "杭州医药港已集聚各类生物医药企业1000余家", "source": "002_7d98f7ccd894a9c1.txt",
         "type": "number", "split": "test"},
        {"id": "t-2", "question": "杭州医药港已集聚各类生物医药企业多少吨？", "answers": [], "evidence": None,
         "source": None, "type": "unanswerable", "split": "test"},
    ]
    gold.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    report, out = tmp_path / "report.md", tmp_path / "metrics.json"
    done = subprocess.run(
        [RAG, "eval", "--url", base_url, "--gold", str(gold), "--split", "test", "--no-ablations",
         "--report", str(report), "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(out.read_text())
    hybrid = payload["metrics"]["hybrid"]
    assert hybrid["questions"] == 2
    assert hybrid["answer_accuracy"] == 1.0 and hybrid["recall@1"] == 1.0
    assert hybrid["abstention"] == 1.0
    assert "# Evaluation report" in report.read_text(encoding="utf-8")


def test_rag_eval_rejects_an_unknown_split_by_naming_the_choices(tmp_path):
    done = subprocess.run([RAG, "eval", "--split", "holdout"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "['dev', 'test', 'all']" in done.stderr and "Traceback" not in done.stderr


def test_gold_type_is_any_label_for_the_breakdown(tmp_path):
    """A gold file may group its questions under labels of its own ("comparison")."""
    gold = tmp_path / "gold.jsonl"
    rows = [{"question": "甲和乙哪个面积更大？", "answers": ["甲"], "type": "comparison"},
            {"question": "面积多大？", "answers": ["2平方公里"]}]
    gold.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert [i.type for i in load_gold([gold])] == ["comparison", "entity"]
    for bad in (["list"], 3, "  "):
        gold.write_text(json.dumps({"question": "面积多大？", "answers": ["2"], "type": bad}) + "\n")
        with pytest.raises(GoldFormatError, match="'type' must be a non-empty string"):
            load_gold([gold])


def test_threshold_also_holds_on_answerable_questions_the_judge_was_not_fitted_on():
    import random

    from rag.judge import RULE_FEATURES, select_and_fit

    rng = random.Random(0)

    def row(conf: float) -> dict[str, float]:
        return {**dict.fromkeys(RULE_FEATURES, 0.0), "confidence_rules": conf, "missing_word": rng.random()}

    # Dev: answerable answers score 0.6-1.0, unanswerable ones 0.2-0.7.
    answerable_conf = [0.6 + 0.4 * rng.random() for _ in range(150)]
    unanswerable_conf = [0.2 + 0.5 * rng.random() for _ in range(40)]
    rows = [row(c) for c in answerable_conf + unanswerable_conf]
    correct = [True] * 150 + [False] * 40
    answerable = correct
    _, alone, _, _ = select_and_fit(rows, correct, answerable, False, 0.04)
    # Further answerable questions score lower than dev's: the dev-only threshold would decline many.
    held = [row(0.55 + 0.2 * rng.random()) for _ in range(100)]
    declined_alone = sum(alone.probability(r) < alone.threshold for r in held) / len(held)
    _, model, _, tried = select_and_fit(rows, correct, answerable, False, 0.04, held)
    declined = sum(model.probability(r) < model.threshold for r in held) / len(held)
    assert declined_alone > 0.04 >= declined
    assert model.threshold < alone.threshold
    assert all(t["also_answerable"] == 100 and t["also_answerable_false_abstention"] <= 0.04 for t in tried.values())


def test_judge_fit_command_fits_on_dev_holds_on_hand_written_questions_and_refuses_test(tmp_path):
    from rag.evaluation import HAND_WRITTEN
    from rag.judge import JudgeModel

    sample = tmp_path / "questions.jsonl"
    sample.write_text("".join(HAND_WRITTEN.read_text(encoding="utf-8").splitlines(keepends=True)[:120]), encoding="utf-8")
    out = tmp_path / "judge.json"
    run = subprocess.run([RAG, "judge", "fit", "--questions", str(sample), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    model = JudgeModel.load(out)
    info = model.info
    assert info["fitted_on"].startswith("dev split of") and info["threshold_also_holds_on"].startswith("questions.jsonl (")
    cv = info["cross_validated_dev"]
    assert cv["false_abstention"] <= 0.04 and cv["also_answerable_false_abstention"] <= 0.04
    assert 0.0 < model.threshold < 1.0
    # By default it also learns from the shipped written questions and dialogues, and is
    # calibrated on the shipped calibration questions.
    assert "judge_questions.jsonl, judge_chats.jsonl" in info["fitted_on"]
    assert info["cross_validated_dev_only"]["questions"] < cv["questions"]
    cal = info["calibration"]
    assert cal["fitted_on"].startswith("calibration.jsonl (") and cal["slope"] > 0
    assert model.calibration == pytest.approx((cal["slope"], cal["offset"]), abs=1e-4)
    assert 0 <= cal["ece_after_cross_validated"] <= 1 and 0 <= cal["ece_before"] <= 1
    refused = subprocess.run([RAG, "judge", "fit", "--split", "test", "--out", str(out)], capture_output=True, text=True)
    assert refused.returncode == 1 and "dev split only" in refused.stderr


def test_rag_eval_scores_the_hand_written_check_sets(base_url, tmp_path):
    """`rag eval --checks DIR` adds a section for the check sets it finds there: answerable
    questions (right, declined), near-miss ones (declined, by kind) and dialogues (follow-ups)."""
    from rag.evaluation import CHECK_FILES, CHECKS_DIR

    for name in CHECK_FILES.values():  # a few lines of each shipped set
        lines = (CHECKS_DIR / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp_path / name).write_text("".join(lines[:4]), encoding="utf-8")
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "t-1", "question": "杭州医药港已集聚各类生物医药企业多少家？", "answers": ["1000余家"],
                                "evidence": "杭州医药港已集聚各类生物医药企业1000余家",
                                "source": "002_7d98f7ccd894a9c1.txt", "type": "number", "split": "dev"},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    report = tmp_path / "report.md"
    done = subprocess.run([RAG, "eval", "--url", base_url, "--gold", str(gold), "--split", "dev", "--no-ablations",
                           "--checks", str(tmp_path), "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    section = report.read_text(encoding="utf-8").split("## Hand-written checks", 1)[1]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| extra_")}
    assert set(rows) == set(CHECK_FILES.values())
    assert "| 4 | right " in rows["extra_questions.jsonl"]
    assert "| 4 | declined " in rows["extra_unanswerable.jsonl"]
    dialogues = rows["extra_chats.jsonl"]
    follow_ups = int(dialogues.split("|")[2].split()[0])
    assert follow_ups >= 4 and "right " in dialogues  # 4 dialogues of 2 or 3 turns
    assert "## Hand-written checks" in done.stdout
