"""worldwalk.controls."""
