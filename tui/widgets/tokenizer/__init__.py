"""Widgets of the Tokenizer section: the try-it token view."""
