"""Widgets, grouped by the section of the screen they serve."""
