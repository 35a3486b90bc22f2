"""The embedding backends: the ONNX export of the real model must give torch's vectors.

The index is built with one backend and may be queried with the other (or after a
fallback), so the two have to agree; the export must also survive damage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embedding import Embedder, OnnxUnavailable, export_onnx, weights_fingerprint

TEXTS = [
    "钱塘新区哪个产业平台主攻半导体产业？",
    "杭州经济技术开发区（下沙）是1993年经国务院批准设立的国家级经济技术开发区，位于钱塘江北岸。",
    "短",
    "大江东产业集聚区以汽车、新能源和装备制造为主导产业，" * 20,  # longer than the token limit
]


@pytest.fixture(scope="module")
def embedders(settings):
    onnx = Embedder.from_settings(settings, max_tokens=256)
    torch = Embedder.from_settings(settings.model_copy(update={"embed_backend": "torch"}), max_tokens=256)
    onnx.warm_up()
    torch.warm_up()
    return onnx, torch


def test_onnx_backend_is_used_and_matches_torch(embedders):
    onnx, torch = embedders
    assert (onnx.backend, torch.backend) == ("onnx", "torch")
    a, b = onnx.encode(TEXTS), torch.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 512)
    assert a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # Same vectors, batched with padding and truncated at the same token limit.
    assert float((a * b).sum(1).min()) > 0.9999


def test_onnx_batches_do_not_leak_padding(embedders):
    """A text's vector does not depend on what it is batched with (the attention mask works)."""
    onnx, _ = embedders
    alone = onnx.encode([TEXTS[2]])[0]
    batched = onnx.encode(TEXTS)[2]
    assert float(alone @ batched) > 0.9999


def test_service_questions_use_onnx(service):
    assert service.embedder.backend == "onnx"


def test_damaged_export_is_made_again(settings, tmp_path):
    """A truncated .onnx file (say, a full disk) is dropped, and the next start exports anew."""
    s = settings.model_copy(update={"onnx_dir": tmp_path})
    path = Embedder.from_settings(s).onnx_path(weights_fingerprint(settings.resolved_model_path()))
    first = Embedder.from_settings(s)
    first.warm_up()
    assert first.backend == "onnx" and path.is_file() and path.with_suffix(".json").is_file()
    good = first.encode(TEXTS[:1])
    path.write_bytes(path.read_bytes()[:1000])

    damaged = Embedder.from_settings(s)
    with pytest.raises(OnnxUnavailable):
        damaged._load_onnx()
    assert not path.exists()  # dropped, not trusted again
    again = Embedder.from_settings(s)
    again.warm_up()
    assert again.backend == "onnx"
    assert float(again.encode(TEXTS[:1])[0] @ good[0]) > 0.9999
    assert not list(tmp_path.glob("*.tmp*")), "no temporary files left behind"


def test_model_that_cannot_be_exported_falls_back_to_torch(settings, tmp_path, caplog):
    """A sentence-transformers folder with a Dense layer after pooling runs on torch, with a warning."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    base = SentenceTransformer(str(settings.resolved_model_path()), device="cpu")
    dense = models.Dense(in_features=512, out_features=64)
    folder = tmp_path / "dense-model"
    SentenceTransformer(modules=[base[0], base[1], dense], device="cpu").save(str(folder))

    with pytest.raises(OnnxUnavailable, match="after pooling"):
        export_onnx(folder, tmp_path / "x.onnx")
    s = settings.model_copy(update={"model_path": folder, "onnx_dir": tmp_path / "onnx"})
    emb = Embedder.from_settings(s)
    with caplog.at_level("WARNING"):
        vec = emb.encode(["测试"])
    assert emb.backend == "torch" and vec.shape == (1, 64)
    assert "ONNX backend unavailable" in caplog.text


def test_unknown_backend_names_the_choices(settings):
    with pytest.raises(ValueError, match=r"\['onnx', 'torch'\]"):
        Embedder(settings.resolved_model_path(), backend="tensorrt")
    with pytest.raises(ValueError, match="onnx"):
        Settings(embed_backend="tensorrt")


def test_export_that_cannot_be_written_falls_back_to_torch(settings, tmp_path, caplog):
    """An ONNX folder that cannot be created (a file is in the way) costs speed, not service."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    emb = Embedder.from_settings(settings.model_copy(update={"onnx_dir": blocker / "onnx"}))
    with caplog.at_level("WARNING"):
        vec = emb.encode(["测试"])
    assert emb.backend == "torch" and vec.shape == (1, 512)
    assert "export to" in caplog.text


@pytest.mark.parametrize("failure", ["exporter raises mid-write", "export disagrees with torch"])
def test_failed_export_leaves_no_temporary_files(settings, tmp_path, monkeypatch, caplog, failure):
    import torch

    import rag.embedding as embedding

    if failure == "exporter raises mid-write":
        def broken_export(model, args, path, **kwargs):
            Path(path).write_bytes(b"\0" * 4096)  # a partial file, as a full disk would leave
            raise RuntimeError("No space left on device")

        monkeypatch.setattr(torch.onnx, "export", broken_export)
    else:
        monkeypatch.setattr(embedding, "_MIN_AGREEMENT", 1.01)  # no export can agree this well
    emb = Embedder.from_settings(settings.model_copy(update={"onnx_dir": tmp_path}))
    with caplog.at_level("WARNING"):
        vec = emb.encode(["测试"])
    assert emb.backend == "torch" and vec.shape == (1, 512)
    assert list(tmp_path.iterdir()) == []  # no temporaries, no half export


def test_dimension_is_computed_once(embedders):
    onnx, _ = embedders
    assert onnx.dimension == 512
    assert onnx._dimension == 512


def test_serving_on_onnx_does_not_load_torch(settings):
    """With the export in place, a service answers without importing torch or transformers
    (about 1 s of start-up and 200+ MB of memory it would never use)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rag.config import Settings\n"
        "from rag.service import RagService\n"
        f"svc = RagService(Settings(index_dir={str(settings.index_dir)!r}, onnx_dir={str(settings.resolved_onnx_dir)!r}))\n"
        "svc.warm_up()\n"
        "assert not svc.ask('钱塘新区哪个产业平台主攻半导体产业？').abstained\n"
        "print(svc.embedder.backend, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=settings.corpus_dir.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnx", "False", "False"]


def test_a_new_export_supersedes_older_formats(settings, tmp_path):
    """An export made by an older version is replaced, not kept beside the new one (100 MB each)."""
    prefix = weights_fingerprint(settings.resolved_model_path())[:16]
    (tmp_path / f"{prefix}.onnx").write_bytes(b"old export")
    (tmp_path / f"{prefix}.json").write_text("{}")
    (tmp_path / "0123456789abcdef-v2.onnx").write_bytes(b"another model's export")
    emb = Embedder.from_settings(settings.model_copy(update={"onnx_dir": tmp_path}))
    emb.warm_up()
    assert emb.backend == "onnx"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["0123456789abcdef-v2.onnx", emb.onnx_path(prefix * 4).name,
                            emb.onnx_path(prefix * 4).with_suffix(".json").name])
