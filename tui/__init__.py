"""The SLM Studio terminal app and the `slm` command line."""
