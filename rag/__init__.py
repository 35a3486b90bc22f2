"""hz-rag: offline question answering with cited sources over Chinese articles.

The library never imports FastAPI and never loads a model or index at import
time; entry points build a :class:`rag.config.Settings` and pass it down.
"""

import os as _os

# Nothing may be fetched at run time: the model ships inside a package.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenMP threads that spin after each forward pass steal the two cores from the
# HTTP server and its clients; must be set before torch loads (p50 42 -> 27 ms).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# NumPy's OpenBLAS threads also spin after each call. Its only work at query time is a
# 3k x 512 matrix-vector product, which one thread does in well under a millisecond;
# with two spinning threads /ask at 8 clients fell from 85 to 65 req/s.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
