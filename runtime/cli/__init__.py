"""The `worldwalk` command line: the entry point, shared arguments, info, the app config and the version."""
