"""Data in the real LLaVA format: a loader for conversation JSON + image folder, a synthetic
generator that writes that same format, and the collator that turns samples into batches."""
