"""Evaluation as a stage: the spec's `evals` -> an eval plan -> results beside the manifest -> gates.

Torch-free (validate, the planner and the daemon read them): `metrics` (what each metric scores),
`regex` (matching under a time bound), `schema` (a bounded JSON Schema subset), `gates`, `rows` (a test
set's rows, and their overlap with training rows), `tasks` (lm-eval task files, read without lm-eval).
With torch (a run, `runner eval`): `generation` (answers and log-likelihoods), `harness` (lm-eval-harness,
an optional extra) and `stage` (base and result side by side, the base cached, per-row files, gates).
"""
