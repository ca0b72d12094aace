"""Rows as tokens: how a row of each format becomes token ids and a loss mask (tokens, rows), and how rows fill
fixed blocks (packing). The planner previews exactly what the executor trains on, because both use these."""
