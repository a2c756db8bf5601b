"""The analyst's alert queue, kept beside the fraud history in the same store."""
