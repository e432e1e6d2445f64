"""Shared library of the BERT question-answering toolkit (demoBERT-compatible)."""
