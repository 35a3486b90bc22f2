"""The tuned embedder: `rag embed train` on a small sample, the shipped model against the base
on its own training questions, and the error that says how to get it when it is missing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.config import ConfigError
from rag.embed_train import EmbedTrainConfig, load_rows, train, triplets


def test_train_command_on_a_sample_writes_a_loadable_model(settings, tmp_path):
    from sentence_transformers import SentenceTransformer

    rows = load_rows()[:12]
    out = tmp_path / "embedder"
    manifest = train(settings, out, EmbedTrainConfig(epochs=1, batch=6), progress=False, rows=rows)
    assert manifest["examples"] == len(triplets(settings, rows, 0, 3)) > 0
    assert len(manifest["loss_per_epoch"]) == 1
    assert json.loads((out / "manifest.json").read_text())["weights_sha256"] == manifest["weights_sha256"]
    assert not list(tmp_path.glob("embedder.*")), "no temporary folder left behind"
    vec = SentenceTransformer(str(out), device="cpu").encode(["钱塘新区的产业平台"], normalize_embeddings=True)
    assert vec.shape == (1, 512) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    # The settings read it from there.
    assert settings.model_copy(update={"tuned_dir": out}).resolved_model_path() == out


def test_tuned_model_separates_answers_from_their_neighbours_better_than_the_base(settings):
    """On its training questions the shipped model puts the answering sentence further above a
    neighbouring sentence than m3e-small as shipped does: the training did what it is for."""
    from sentence_transformers import SentenceTransformer

    items = triplets(settings, load_rows(), 0, 3)[:60]

    def margin(path) -> float:
        model = SentenceTransformer(str(path), device="cpu")
        q, p, n = (model.encode(texts, normalize_embeddings=True)
                   for texts in ([t.question for t in items], [t.positive for t in items], [t.negatives[0] for t in items]))
        return float(np.mean((q * p).sum(1) - (q * n).sum(1)))

    assert margin(settings.resolved_model_path()) > margin(settings.base_model_path()) + 0.02


def test_hard_negatives_are_neighbours_without_the_answer(settings):
    rows = [r for r in load_rows() if r.get("answer")][:40]
    one, three = triplets(settings, rows, 0, 3), triplets(settings, rows, 0, 3, negatives=3)
    assert [t.question for t in one] == [t.question for t in three]
    assert all(len(t.negatives) == 1 for t in one) and max(len(t.negatives) for t in three) == 3
    answers = {r["question"]: r["answer"] for r in rows}
    for t in three:
        assert len(set(t.negatives)) == len(t.negatives) and t.positive not in t.negatives
        assert all(answers[t.question] not in n for n in t.negatives)


def test_missing_tuned_model_names_the_commands(settings, tmp_path):
    with pytest.raises(ConfigError, match=r"rag embed train.*RAG_EMBEDDER=base"):
        settings.model_copy(update={"tuned_dir": tmp_path / "none"}).resolved_model_path()
    base = settings.model_copy(update={"tuned_dir": tmp_path / "none", "embedder": "base"})
    assert base.resolved_model_path().name == "m3e-small"
