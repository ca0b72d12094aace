"""Declared rewards: a reward written as data (a list of weighted checks), validated with the rest of the
spec and scored here, by plain code that runs nothing from the spec.

    spec.py      the `reward` a method section holds: terms with weights (checks, a reward model, a function)
    text.py      what checks read: bounded, cleaned text; tagged answers, the text after a marker, numbers
    pattern.py   regular expressions on RE2 (linear time, bounded memory): no pattern can hang a run
    jsonvalue.py bounded JSON parsing and the JSON Schema subset a `json` check conforms to
    scoring.py   one score per completion and check, the weighted total, and the reward as a formula

GRPO, RLOO and PPO all score declared checks with `scoring.RewardScorer`; the reward model and the
Python function terms are the recipes' business (they need torch, or run code).

Torch-free: `runner validate` and the watch daemon import the spec models; a declared reward is not code,
so the daemon runs it without any allow option.
"""
