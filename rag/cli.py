"""The ``rag`` command: ``index rebuild | ask | search | add | remove | documents | eval | bench | serve |
judge fit | embed train | reader train``.

Builds the one :class:`Settings` from the environment (and flags) and passes it
down. ``main(argv) -> int`` so tests can call it in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from rag.config import ConfigError, Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("corpus_dir", "index_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from rag.index import rebuild

    report = rebuild(_settings(args), force=args.force, progress=not args.quiet)
    return 1 if report.errors and args.strict else 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from rag.service import RagService

    service = RagService(_settings(args))
    service.warm_up()
    answer = service.ask(args.question, top_k=args.top_k)
    if args.json:
        from rag.service import answer_to_dict

        print(json.dumps(answer_to_dict(answer), ensure_ascii=False, indent=2))
    else:
        from rag.writer import closest_passages

        print(answer.text)
        for c in answer.citations:
            print(f"  [{c.id}] {c.doc_id} lines {c.line_start}-{c.line_end} ({c.title}): {c.text}")
        if answer.abstained:
            for line in closest_passages(answer.hits):
                print(f"  {line}")
        print(f"  confidence (P answer right): {answer.confidence:.2f}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from rag.service import RagService

    service = RagService(_settings(args))
    service.warm_up()
    for hit in service.search(args.query, top_k=args.top_k):
        print(f"{hit.score:.3f} {hit.chunk.doc_id}#{hit.chunk.chunk_id} {hit.chunk.title}: {hit.chunk.text[:120]}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.observability import log_config

    settings = _settings(args)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                log_config=log_config(settings.log_format, args.log_level))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rag.evaluation import run_eval_command

    return run_eval_command(args, _settings(args))


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.scale:
        from rag.bench_scale import run_scale_command

        return run_scale_command(args, _settings(args))
    from rag.bench import run_bench_command

    return run_bench_command(args, _settings(args))


def _cmd_judge_fit(args: argparse.Namespace) -> int:
    from rag.evaluation import run_judge_fit_command

    return run_judge_fit_command(args, _settings(args))


def _cmd_embed_train(args: argparse.Namespace) -> int:
    from rag.embed_train import run_embed_train_command

    return run_embed_train_command(args, _settings(args))


def _cmd_reader_fit(args: argparse.Namespace) -> int:
    from rag.reader_fit import run_reader_fit_command

    return run_reader_fit_command(args, _settings(args))


def _cmd_reader_train(args: argparse.Namespace) -> int:
    from rag.reader_train import run_train_command

    return run_train_command(args, _settings(args))
def _cmd_add(args: argparse.Namespace) -> int:
    from rag.ingest.manager import DocumentManager, run_ocr
    manager = DocumentManager(_settings(args))
    manager.store.recover()
    records = manager.add([(str(path), path.read_bytes()) for path in args.files])
    for record in records:
        if record.pending_ocr:
            print(f"{record.name}: OCR of {record.pending_ocr} scanned page(s) (slower than a text layer)…")
            record = run_ocr(manager.store, record, manager.settings.ocr_dpi,
                             lambda done, total: print(f"  page {done}/{total}", end="\r", flush=True))
        print(f"added {record.doc_id}: {record.name} ({record.format}, {len(record.pages)} page(s))")
    return _build(manager)
def _build(manager) -> int:  # type: ignore[no-untyped-def]
    from rag.ingest.manager import check_indexable
    for record in manager.store.records():
        check_indexable(manager.store, record)
    manager.build()
    last = manager.index_status()["last_build"]
    print("index rebuilt" if last and last["ok"] else f"error: {last and last['error']}")
    _print_documents(manager)
    return 0 if last and last["ok"] else 1
def _cmd_remove(args: argparse.Namespace) -> int:
    from rag.ingest.manager import DocumentManager
    manager = DocumentManager(_settings(args))
    if not manager.remove(args.doc_id):
        print(f"error: no uploaded document '{args.doc_id}' (see `rag documents`)", file=sys.stderr)
        return 1
    print(f"removed {args.doc_id}")
    return _build(manager)
def _print_documents(manager) -> None:  # type: ignore[no-untyped-def]
    for row in manager.documents():
        pages = f"{row.pages} page(s), {row.ocr_pages} by OCR" if row.pages is not None else row.format
        reason = f" ({row.reason})" if row.reason else ""
        print(f"{row.doc_id}  {row.status:<8} {row.title}  [{row.name or row.path}; {pages}]{reason}")
def _cmd_documents(args: argparse.Namespace) -> int:
    from rag.ingest.manager import DocumentManager
    _print_documents(DocumentManager(_settings(args)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-dir", dest="corpus_dir", type=Path, help="default: corpus (RAG_CORPUS_DIR)")
    parser.add_argument("--index-dir", dest="index_dir", type=Path, help="default: index (RAG_INDEX_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="manage the index")
    isub = index.add_subparsers(dest="index_command", required=True)
    rb = isub.add_parser("rebuild", help="build the index from the corpus (incremental, atomic)")
    rb.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    rb.add_argument("--quiet", action="store_true", help="no progress bar")
    rb.add_argument("--strict", action="store_true", help="exit 1 when a corpus file was skipped")
    rb.set_defaults(func=_cmd_rebuild)

    ask = sub.add_parser("ask", help="answer one question")
    ask.add_argument("question")
    ask.add_argument("--top-k", type=int, default=None)
    ask.add_argument("--json", action="store_true")
    ask.set_defaults(func=_cmd_ask)

    search = sub.add_parser("search", help="show retrieved passages")
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=None)
    search.set_defaults(func=_cmd_search)

    add = sub.add_parser("add", help="add PDF/DOCX/HTML/TXT/MD files (stored under corpus/uploads) and reindex")
    add.add_argument("files", nargs="+", type=Path)
    add.set_defaults(func=_cmd_add)
    remove = sub.add_parser("remove", help="remove an uploaded document and reindex")
    remove.add_argument("doc_id")
    remove.set_defaults(func=_cmd_remove)
    docs = sub.add_parser("documents", help="list uploaded documents with their status")
    docs.set_defaults(func=_cmd_documents)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=_cmd_serve)

    ev = sub.add_parser("eval", help="score answers against gold Q&A and write a report")
    ev.add_argument("--gold", type=Path, action="append", help="gold JSONL (repeatable); default eval/gold.jsonl")
    ev.add_argument("--chat", type=Path, help="chat gold JSONL; default eval/chat_gold.jsonl")
    ev.add_argument("--split", default="test", help="which split to report: dev, test or all (default test)")
    ev.add_argument("--json", dest="json_out", type=Path, help="write metrics as JSON here")
    ev.add_argument("--report", type=Path, help="markdown report path; default eval/reports/eval-<split>.md")
    ev.add_argument("--url", help="evaluate a running server at this base URL instead of in-process")
    ev.add_argument("--no-ablations", action="store_true", help="skip keyword-only and dense-only runs")
    ev.add_argument("--checks", type=Path, nargs="?", const=True, default=None, metavar="DIR",
                    help="also score the hand-written check sets (default folder rag/data: 640 answerable and 213 "
                         "near-miss questions, 123 dialogues; under a minute in-process)")
    ev.set_defaults(func=_cmd_eval)

    judge = sub.add_parser("judge", help="the judge that decides to answer or abstain")
    jsub = judge.add_subparsers(dest="judge_command", required=True)
    jf = jsub.add_parser("fit", help="fit the judge on the dev split (cross-validated) and write its file")
    jf.add_argument("--gold", type=Path, action="append", help="gold JSONL (repeatable); default eval/gold.jsonl")
    jf.add_argument("--chat", type=Path, help="chat gold JSONL; default eval/chat_gold.jsonl")
    jf.add_argument("--questions", type=Path, default=None,
                    help="hand-written answerable questions the threshold must also hold on; "
                         "default rag/data/extra_questions.jsonl")
    jf.add_argument("--split", default="dev", help="only dev: the test split is never fitted on")
    jf.add_argument("--reader", default="rules", choices=["rules", "model"], help="which reader's signals")
    jf.add_argument("--out", type=Path, default=None, help="default models/judge.json (judge-reader.json for --reader model)")
    jf.add_argument("--train-questions", type=Path, default=None,
                    help="written questions (answerable and near-miss) the judge also learns from; "
                         "default rag/data/judge_questions.jsonl when present")
    jf.add_argument("--train-chats", type=Path, default=None,
                    help="written dialogues the judge also learns from; default rag/data/judge_chats.jsonl when present")
    jf.add_argument("--calibration", type=Path, default=None,
                    help="questions (answerable and near-miss) to calibrate the judge's probabilities on; "
                         "default rag/data/calibration.jsonl when present")
    jf.add_argument("--max-false", type=float, default=0.04, help="false-abstention budget for the threshold")
    jf.set_defaults(func=_cmd_judge_fit)

    bench = sub.add_parser("bench", help="time index builds and HTTP load; writes eval/reports/bench.md")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    bench.add_argument("--concurrency", default="1,4,8,16", help="comma-separated client counts")
    bench.add_argument("--report", type=Path, default=Path("eval/reports/bench.md"))
    bench.add_argument("--skip-build", action="store_true", help="skip the index build timings")
    bench.add_argument("--scale", action="store_true",
                       help="instead: the stores over synthetic corpora of growing size (long; see docs/scale.md)")
    bench.add_argument("--sizes", default="10000,100000,1000000", help="with --scale: passages per corpus")
    bench.add_argument("--stores", default="faiss-flat,faiss-hnsw,milvus-lite",
                       help="with --scale: which stores (milvus-lite: Milvus Lite in a scratch folder, or the "
                            "server RAG_MILVUS_URI names when it is a URL)")
    bench.add_argument("--scale-out", dest="json_out", type=Path, default=Path("docs/scale-results.json"),
                       help="with --scale: results JSON (the table goes beside it as .md, the plot as .png)")
    bench.add_argument("--timeout", type=float, default=4 * 3600, help="with --scale: seconds per run")
    bench.set_defaults(func=_cmd_bench)

    embed = sub.add_parser("embed", help="the tuned embedding model")
    esub = embed.add_subparsers(dest="embed_command", required=True)
    et = esub.add_parser("train", help="fine-tune m3e-small on questions written from the articles")
    et.add_argument("--out", type=Path, default=None, help="default: models/embedder (RAG_TUNED_DIR)")
    et.add_argument("--epochs", type=int, default=None, help="passes over the questions (default: EmbedTrainConfig's)")
    et.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    et.add_argument("--negatives", type=int, default=None, help="hard negatives per question (default 1)")
    et.set_defaults(func=_cmd_embed_train)

    reader = sub.add_parser("reader", help="the trained sentence reader")
    rsub = reader.add_subparsers(dest="reader_command", required=True)
    rf = rsub.add_parser("fit", help="fit the sentence-score weights on the dev split (cross-validated)")
    rf.add_argument("--split", default="dev", help="only dev: the test split is never fitted on")
    rf.add_argument("--out", type=Path, default=None, help="default: models/reader-weights.json")
    rf.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    rf.set_defaults(func=_cmd_reader_fit)
    rt = rsub.add_parser("train", help="make data, train, export int8 ONNX and measure on dev")
    rt.add_argument("--out", type=Path, default=Path("models/reader"), help="default: models/reader")
    rt.add_argument("--epochs", type=int, default=3)
    rt.add_argument("--max-pairs", dest="max_pairs", type=int, default=14000)
    rt.add_argument("--seed", type=int, default=13)
    rt.set_defaults(func=_cmd_reader_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        print(f"error: invalid setting: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
