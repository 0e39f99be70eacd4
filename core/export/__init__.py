"""Other tools' formats: Hugging Face (both ways) and GGUF for llama.cpp."""
