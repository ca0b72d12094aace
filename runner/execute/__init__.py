"""The run stage: load, train through a method recipe, verify, save, and record a manifest.
Torch, transformers, TRL and PEFT are imported here and below, never above."""
