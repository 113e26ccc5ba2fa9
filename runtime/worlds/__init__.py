"""The worlds: the reference world (a GLSL shader on a headless GL context) and the bundled model."""
