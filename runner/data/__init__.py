"""Data sources: files (JSONL, CSV, parquet, arrow), save_to_disk folders and hub datasets in the local
cache, read through one torch-free `RowSource` by the validator, the planner and the executor."""
