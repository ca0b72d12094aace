"""One file per method, each readable top to bottom: setup -> train. The job saves and verifies."""
