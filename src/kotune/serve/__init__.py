"""Serving: terminal chat, an OpenAI-compatible HTTP API with streaming, and a web chat page, all over the one
engine in `kotune.models.generate`."""
