"""The planner: the model shape and recipe that a corpus and a time (or token) budget allow on this machine."""
