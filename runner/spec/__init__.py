"""The spec stage: YAML with positions, the JobSpec models, and checks without torch."""
