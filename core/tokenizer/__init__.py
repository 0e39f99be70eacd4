"""Text to tokens: byte-level BPE (`bpe`), tokenizers trained on the corpus and kept by name (`named`), and
the chat template that renders conversations (`chat_template`)."""
