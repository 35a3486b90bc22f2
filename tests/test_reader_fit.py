"""The reader's weights: the round trip between config and weights, the weights file,
and the conditional-logit fit on data whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.reader import (
    FEATURES,
    Reader,
    ReaderConfig,
    ReaderWeightsError,
    load_weights,
    save_weights,
)
from rag.reader_fit import (
    Question,
    choose_strength,
    cross_validate,
    fit_logits,
    hit_rate,
    temperature,
    to_config_scale,
)


def test_config_and_weights_convert_both_ways():
    config = ReaderConfig(dense=0.5, cover=0.3, context=0.25, passage=0.1, heading=0.2, type_miss=0.05, echo=0.0)
    back = ReaderConfig.from_weights(config.weights())
    for name in ("dense", "cover", "context", "passage", "heading", "type_miss", "echo"):
        assert getattr(back, name) == pytest.approx(getattr(config, name))


def test_weights_file_round_trip_and_errors_name_the_command(tmp_path):
    path = tmp_path / "w.json"
    weights = dict(zip(FEATURES, ReaderConfig(dense=0.6).weights(), strict=True))
    save_weights(path, weights, {"note": "test"})
    loaded = load_weights(path, max_sentences=1)
    assert loaded.dense == pytest.approx(0.6) and loaded.max_sentences == 1
    for text in ("{not json", json.dumps({"format": 1, "weights": {"dense": 1.0}}), json.dumps({"format": 7})):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ReaderWeightsError, match="rag reader fit"):
            load_weights(path)
    with pytest.raises(ReaderWeightsError, match="rag reader fit"):
        load_weights(tmp_path / "missing.json")


def _questions(n: int, seed: int) -> list[Question]:
    """Candidates whose positive is the one with the highest dense score, while coverage is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        feats = rng.random((8, len(FEATURES)))
        feats[:, FEATURES.index("heading")] = 0.0
        positive = np.zeros(8, dtype=bool)
        positive[int(np.argmax(feats[:, FEATURES.index("dense")]))] = True
        out.append(Question(str(i), feats, positive))
    return out


def test_fit_learns_which_feature_points_at_the_answer():
    train, held = _questions(120, 0), _questions(60, 1)
    prior = np.array(ReaderConfig().weights())
    u = fit_logits(train, prior * temperature(train, prior), strength=0.1)
    assert hit_rate(held, u) > hit_rate(held, prior) + 0.2
    assert hit_rate(held, u) > 0.9
    scaled = to_config_scale(u, prior)
    # Rescaling keeps the ranking and puts the gains on the defaults' scale.
    assert hit_rate(held, scaled) == hit_rate(held, u)
    gain = [FEATURES.index(n) for n in ("dense", "cover", "cover_context", "passage")]
    assert scaled[gain].sum() == pytest.approx(prior[gain].sum())
    # A strong pull keeps the prior's ranking.
    strong = fit_logits(train, prior * temperature(train, prior), strength=1e6)
    assert hit_rate(held, strong) == hit_rate(held, prior)


def test_cross_validation_reports_the_prior_and_every_strength():
    cv = cross_validate(_questions(50, 2), np.array(ReaderConfig().weights()))
    assert set(cv) == {"prior", "0.1", "1.0", "10.0", "100.0", "10000.0"}
    assert cv["0.1"] > cv["prior"]


def test_strength_is_the_strongest_pull_within_one_standard_error_of_the_best():
    # One question in 160 apart is noise: the defaults stay.
    assert choose_strength({"prior": 0.925, "0.1": 0.9375, "1.0": 0.9375, "10.0": 0.93, "100.0": 0.925,
                            "10000.0": 0.925}, 160) is None
    # A clear gain is kept, with the strongest pull that still has it.
    assert choose_strength({"prior": 0.80, "0.1": 0.95, "1.0": 0.94, "10.0": 0.85, "100.0": 0.81,
                            "10000.0": 0.80}, 160) == 1.0


def test_pipeline_reads_the_weights_file_and_names_the_command_when_it_is_bad(settings, tmp_path):
    from rag.embedding import weights_fingerprint
    from rag.index import load_index
    from rag.pipeline import build_pipeline
    from rag.service import RagService

    service = RagService(settings)
    service.embedder.warm_up()
    data = load_index(settings, weights_fingerprint(service.embedder.model_path))
    path = tmp_path / "weights.json"
    save_weights(path, dict(zip(FEATURES, ReaderConfig(dense=0.9).weights(), strict=True)), {})
    pipe = build_pipeline(settings.model_copy(update={"reader_weights_path": path}), data, service.encoder.encode_many)
    assert pipe.reader.config.dense == pytest.approx(0.9)
    assert pipe.reader.config.max_sentences == settings.max_answer_sentences
    with pytest.raises(ReaderWeightsError, match="rag reader fit"):
        build_pipeline(settings.model_copy(update={"reader_weights_path": tmp_path / "missing.json"}), data,
                       service.encoder.encode_many)


def test_reader_fit_command_fits_on_dev_and_refuses_the_test_split(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "w.json"
    run = subprocess.run([sys.executable, "-m", "rag.cli", "reader", "fit", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    info = json.loads(out.read_text(encoding="utf-8"))["info"]
    assert set(info["cross_validated_hit_rate"]) >= {"prior", "0.1"}
    assert 0.5 < info["cross_validated_hit_rate"]["prior"] <= 1.0
    load_weights(out)
    refused = subprocess.run([sys.executable, "-m", "rag.cli", "reader", "fit", "--split", "test", "--out", str(out)],
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and "dev split only" in refused.stderr


def test_the_asked_attribute_is_the_words_next_to_the_question_word(service):
    from rag.query import Turn
    from rag.reader import asked_attribute

    pipe = service.require().pipeline
    words = {w for w, _, _ in asked_attribute(pipe.queries.from_turns([Turn("user", "临江街道禁毒办采用什么模式开展宣传？")]))}
    assert "模式" in words and "临江" not in words
    assert asked_attribute(pipe.queries.from_turns([Turn("user", "临江街道禁毒办")])) == ()


def test_the_sentence_stating_the_asked_attribute_beats_the_one_naming_the_subject(service):
    """The subject is named in the sentences around; the answer's sentence states the attribute
    asked (关键) and names the subject only in passing. Without the attribute's weight the
    reader cites a sentence about the subject that never says what the key is."""
    from dataclasses import replace

    from rag.query import Turn

    pipe = service.require().pipeline
    query = pipe.queries.from_turns([Turn("user", "苏州工业园区搞去行政化改革，关键是什么？")])
    hits = pipe.retrieve(query, pipe.answer_passages)
    assert "关键是" in pipe.reader.read(query, hits)[0].sentence.text
    plain = Reader(pipe.reader.data, replace(pipe.reader.config, attribute=0.0))
    assert "关键是" not in plain.read(query, hits)[0].sentence.text


def test_a_list_item_does_not_borrow_the_words_of_the_item_before(service):
    reader = service.require().pipeline.reader
    sents = reader.data.sentences
    after_item = [i for i in range(1, len(sents)) if sents[i - 1].doc_id == sents[i].doc_id
                  and sents[i - 1].text.endswith("；")]
    after_full = [i for i in range(1, len(sents)) if sents[i - 1].doc_id == sents[i].doc_id
                  and sents[i - 1].text.endswith("。")]
    assert after_item and after_full
    for i in after_item[:20]:
        assert reader._sentence_keys[i - 1] not in reader._context_keys[i]
    for i in after_full[:20]:
        assert reader._sentence_keys[i - 1] in reader._context_keys[i]
