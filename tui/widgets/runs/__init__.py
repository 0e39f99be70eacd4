"""Widgets of the Runs section."""
