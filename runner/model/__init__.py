"""The base model as runner finds it, torch-free where it can be: where it lies (a folder, the hub cache, a GGUF
file, another job's run) and its identity (source), and its parameters' names and shapes without its weights
(skeleton, on the meta device). Used by the planner and the executor alike."""
