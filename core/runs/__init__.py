"""Runs side by side: every run of a workspace as a row, their curves against step, tokens or wall time,
the settings in which they differ, and the lineage from base to branches, merges and fine-tunes."""
