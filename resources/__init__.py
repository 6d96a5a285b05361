"""Bundled data files (default prompts, demo model weights, shipped profiles)."""
