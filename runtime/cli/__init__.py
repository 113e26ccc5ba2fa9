"""The `worldwalk` command line: the entry point, info and the app config (the arguments every command
shares are runtime/args.py, the version runtime/version.py)."""
