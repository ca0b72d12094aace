"""The watch daemon: a reconciler between a folder of specs (desired state) and a SQLite
store (actual state), running each job through an executor (runner.daemon.executor: a child
process group on this box, or a Slurm job). Never imports torch, runner.commands or runner.execute."""
