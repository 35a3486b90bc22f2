"""hz-rag: offline question answering with cited sources over Chinese articles.

The library never imports FastAPI and never loads a model or index at import
time; entry points build a :class:`rag.config.Settings` and pass it down.
"""

__version__ = "0.1.0"
