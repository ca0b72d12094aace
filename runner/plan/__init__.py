"""The plan stage: resolve a spec into a Plan. Torch is imported only inside functions, to
build the model skeleton on the meta device; no weights are loaded."""
