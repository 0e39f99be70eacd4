"""The SLM Studio engine. It never imports Textual or `tui`.

The ground (`errors`, `atomic`, `config`, `workspace`, `device`) and the model's nouns (`model`, `optim`,
`checkpoint`, `evaluate`) are flat modules; each stage is a package: `data`, `tokenizer`, `chat`, `train`,
`merge`, `export`. Importing is cheap: torch loads only with the modules that need it.
"""
