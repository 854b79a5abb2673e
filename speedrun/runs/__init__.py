"""A run around the step: its config and recipes, the values derived from them, its state on disk,
its faults, its report and plots, and the leaderboard's entries read from runs."""
