"""Everything that touches rknn-toolkit2: build configuration, the isolated worker process
that runs the toolkit, and parsers for what it writes (snapshots, logs)."""
