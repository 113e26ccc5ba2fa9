"""Training and evaluating the bundled model against the reference world."""
