"""The data-generation stages of `rlhfx sample`: reading/writing JSONL results and the post-processors."""
