"""Text: the corpus under data/ (discovery, stats, the train/validation split), conversation files and the
bundled sample corpus. Nothing here knows about tokens."""
