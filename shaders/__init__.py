"""worldwalk.shaders."""
