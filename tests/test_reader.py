"""The trained reader: input format, the shipped model, its file checks, and `rag reader train`."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.reader_model import (
    MANIFEST_FILE,
    MODEL_FILE,
    CrossEncoderReader,
    ReaderUnavailable,
    encode_pairs,
    load_tokenizer,
    pair_text,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "reader"

# Questions written for this test from corpus sentences that neither the reader's
# hand-written training questions nor eval/gold.jsonl use as evidence.
CASES = [
    ("乐链公司是哪一年创办的？", "乐链于2016年创办并落地杭州出口加工区（现综保区），主要业务是为跨境电商企业提供出口和逆向物流的合规路径。"),
    ("松下的Alpha系列洗衣机花了多长时间打磨？", "其中，松下发布的Alpha 系列高端洗衣机产品，跨界保时捷设计，经历了28个月的打磨。"),
    ("文清小学给孩子们买了多少张小床？", "文清小学校长邓华说，学校新装了空调10台、除湿机5台、窗帘53米，购置了小床180张、午睡垫1720块，为孩子们营造舒适的睡眠环境。"),
    ("钱塘区改造午睡空间投入了多少钱？", "钱塘区教育局相关负责人介绍，区里财政投入近600万元，升级改造各校午睡空间，采购午睡用具，全区5.7万余名中小学生午休质量得到了提升和保障。"),
]
UNRELATED = [
    "4月26日，临江街道相关负责人在巡查河道时再次强调2020年的治水目标。",
    "同时，总结2019年以来党群工作部的相关工作成果，并部署2020年工作重点任务。",
    "2020年伊始，新冠肺炎疫情这只突如其来的“黑天鹅”，对产业经济造成巨大影响。",
    "市级以上各类孵化器载体28个，创新载体建设初见成效。",
]


def test_pair_input_is_cls_question_sep_sentence_sep_with_segment_ids(settings):
    tok = load_tokenizer(settings.resolved_model_path() / "tokenizer.json")
    arrays = encode_pairs(tok, "几家？", ["有3家。", "很长的一句话" * 40], max_tokens=32)
    ids, types, mask = arrays["input_ids"], arrays["token_type_ids"], arrays["attention_mask"]
    assert ids.shape == (2, 32)  # padded to the longest, which was cut to the limit
    tokens = [tok.id_to_token(int(i)) for i in ids[0][mask[0] == 1]]
    assert tokens == ["[CLS]", "几", "家", "？", "[SEP]", "有", "3", "家", "。", "[SEP]"]
    assert types[0][mask[0] == 1].tolist() == [0] * 5 + [1] * 5
    assert mask[0].sum() == 10 and mask[1].sum() == 32  # padding is masked out
    assert tok.id_to_token(int(ids[1][31])) == "[SEP]" and tok.id_to_token(int(ids[1][1])) == "几"  # the question survives


def test_pair_text_adds_the_previous_sentence_to_a_sentence_that_points_back_and_the_title_on_request():
    assert pair_text("产值10亿元。", "某园区", "某园区成立于2001年。") == "产值10亿元。"
    assert pair_text("该园区产值10亿元。", "", "某园区成立于2001年。") == "某园区成立于2001年。该园区产值10亿元。"
    assert pair_text("产值10亿元。", "某园区", "", context="title") == "某园区：产值10亿元。"
    with pytest.raises(ValueError, match=r"Choose one of \['sentence', 'title'\]"):
        pair_text("产值10亿元。", context="passage")


SHIPPED_WEIGHTS = (SHIPPED / MODEL_FILE).is_file()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, settings) -> Path:
    """`rag reader train` on a small sample (48 pairs, one epoch): the real command end to end."""
    from rag.cli import main

    out = tmp_path_factory.mktemp("reader")
    code = main([
        "--index-dir", str(settings.index_dir), "--corpus-dir", str(settings.corpus_dir),
        "reader", "train", "--out", str(out), "--epochs", "1", "--max-pairs", "48", "--seed", "5",
    ])
    assert code == 0
    return out


@pytest.mark.slow
def test_reader_train_command_makes_a_loadable_model_with_its_manifest(tiny):
    manifest = json.loads((tiny / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["training_data"]["pairs"] == 48 and manifest["epochs"] == 1
    assert (tiny / manifest["training_data"]["file"]).is_file()
    assert len(manifest["base_model"]["weights_fingerprint"]) == 64
    assert manifest["int8_vs_torch"]["pearson"] > 0.9  # the int8 graph ranks as torch does
    assert manifest["settings"]["context"] in ("sentence", "title")
    dev = manifest["dev"][manifest["settings"]["context"]]
    assert dev["answerable"]["questions"] > 50 and dev["unanswerable_questions"] > 10
    reader = CrossEncoderReader(tiny)
    reader.warm_up()
    question, evidence = CASES[0]
    together = reader.score(question, [evidence, *UNRELATED])
    assert together.dtype == np.float32 and together.shape == (5,)
    assert ((together >= 0) & (together <= 1)).all()
    alone = np.array([reader.score(question, [s])[0] for s in [evidence, *UNRELATED]])
    # Padding is masked out, but dynamic int8 quantisation scales activations per batch,
    # so a score moves by a few thousandths with its batch-mates (0.0035 seen).
    np.testing.assert_allclose(together, alone, atol=0.02)
    assert reader.score(question, []).shape == (0,)


@pytest.mark.slow
def test_damaged_or_missing_weights_are_refused_with_the_rebuild_command(tiny, tmp_path):
    copy = tmp_path / "reader"
    shutil.copytree(tiny, copy)
    with (copy / MODEL_FILE).open("r+b") as fh:  # flip one byte in the middle
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ReaderUnavailable, match=r"model\.int8\.onnx does not match its manifest.*rag reader train"):
        CrossEncoderReader(copy).warm_up()
    (copy / MODEL_FILE).unlink()
    with pytest.raises(ReaderUnavailable, match=r"model\.int8\.onnx is missing.*rag reader train"):
        CrossEncoderReader(copy).warm_up()


@pytest.mark.skipif(not SHIPPED_WEIGHTS, reason="no reader weights shipped in models/reader (see its README)")
def test_shipped_reader_scores_the_evidence_above_unrelated_sentences():
    reader = CrossEncoderReader(SHIPPED)
    reader.warm_up()
    for question, evidence in CASES:
        scores = reader.score(question, [evidence, *UNRELATED])
        assert scores[0] > scores[1:].max(), (question, scores)


def test_missing_reader_folder_names_the_path_and_the_rebuild_command(tmp_path):
    with pytest.raises(ReaderUnavailable, match=r"No reader model at .*nowhere.*rag reader train"):
        CrossEncoderReader(tmp_path / "nowhere").warm_up()


def test_template_questions_do_not_copy_their_sentence():
    from rag.reader_train import template_question

    sentence = "此前，杭州综合保税区还新建南卡口，使货车通关时间从75秒缩减至5秒。"
    made = [template_question(sentence, "杭州综保区：打造外向型经济新引擎", "", random.Random(s)) for s in range(30)]
    made = [m for m in made if m]
    assert len(made) >= 20
    for question, span, _ in made:
        assert span in sentence and span not in question
        assert question.endswith("？") and len(question) < len(sentence) * 0.7
