"""Widgets of the Chat section: the conversation log, the prompt with history, the status line."""
