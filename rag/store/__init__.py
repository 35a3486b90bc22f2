"""Stores that hold the index's vectors and keyword search: see :mod:`rag.store.base`."""

from rag.store.base import STORES, IndexNotReady, Store, StoreUnavailable

__all__ = ["STORES", "IndexNotReady", "Store", "StoreUnavailable"]
