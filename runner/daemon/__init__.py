"""The watch daemon: a reconciler between a folder of specs (desired state) and a SQLite
store (actual state), running each job as a child process group. Never imports torch."""
