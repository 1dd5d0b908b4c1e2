"""The index: versioned gallery folders (publishing one, loading and searching one), the FAISS
or Milvus vector stores, the local features kept for verification and the SQLite metadata."""
