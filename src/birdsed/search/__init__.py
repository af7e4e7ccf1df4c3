"""Embeddings of an archive and search by example: `birdsed embed` (embed.py) writes an embedding DB (db.py: every
window's vector, f16, its file, start and end, and an ANN index per segment, index.py); `birdsed search` (query.py)
finds the windows nearest to example clips. `open_db(path)` is the Python API `search` and `learn` read it through."""

from birdsed.search.db import DBError, DBInfo, EmbeddingDB, open_db

__all__ = ["DBError", "DBInfo", "EmbeddingDB", "open_db"]
