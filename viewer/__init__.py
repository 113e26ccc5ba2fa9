"""worldwalk.viewer."""
