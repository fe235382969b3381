"""Data: one internal schema, converters at the edge, templates, masking and batching.

Data code is handed a tokenizer; it never loads a model or tokenizer itself.
"""
