"""worldwalk.runtime."""
