"""Widgets of the Train section: the loss plot and the run's figures."""
