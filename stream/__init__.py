"""worldwalk.stream."""
