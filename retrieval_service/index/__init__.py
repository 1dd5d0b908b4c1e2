"""The index: versioned gallery folders (publishing one, loading and searching one), the FAISS
or Milvus vector stores, the local-feature vote index and the SQLite metadata."""
