"""Compressors: the contract (``base``), the registry (``registry``) and the built-in families."""
