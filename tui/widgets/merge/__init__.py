"""Widgets of the Merge section: the checkpoint picker and the side-by-side validation table."""
