"""The SLM Studio engine: data, tokenizer, model, training, generation and checkpoints.

Importing this package is cheap: heavy modules (torch) load only when their module is imported.
"""
