"""Rewards: rule-based reward functions (functions.py) and scores read from trained reward models (score.py)."""
