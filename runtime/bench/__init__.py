"""`worldwalk bench` and the runtime's benchmark suites."""
