"""The data side of prefstudio: the DuckDB store, file formats, AI judges, agreement, the UI.

Nothing in this package imports ``rewardmodel`` or ``policy``; where a judge needs a loaded
language model or a reward-model scorer, the caller passes the object in.
"""
