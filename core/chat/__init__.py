"""Talking to a model: generation (`generate`), sampling settings, the chat session the studio drives,
ratings of answers (`feedback`) and the OpenAI-compatible server (`serve`)."""
