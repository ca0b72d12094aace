"""A quantised frozen base (QLoRA): what bitsandbytes stores, in words and in bytes. No torch, no bitsandbytes.

validate asks whether bitsandbytes is installed without importing it; the planner counts the stored
bytes; the executor builds the BitsAndBytesConfig from the same settings (runner.execute.loading).

Storage per weight of a quantised linear layer (bitsandbytes' blockwise quantisation):
- 4-bit: half a byte, plus one scale per block of 64 weights: a 4-byte float, or with double
  quantisation a 1-byte code plus a 4-byte float per 256 blocks (QLoRA, section 3);
- 8-bit (LLM.int8): one byte, plus one 4-byte scale per output row.
Embeddings, norms and the output head are not quantised: they stay in the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.trackers import importable

EXTRA = "qlora"
BLOCK = 64
"""Weights per 4-bit block (bitsandbytes' default for weights)."""
NESTED_BLOCK = 256
"""Blocks per second-level block of double quantisation."""
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Storage:
    """How the frozen base's linear weights are stored (the resolved `trainable.quantize`)."""

    bits: int
    type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "fp32"

    def describe(self) -> str:
        if self.bits == 8:
            return "8-bit LLM.int8 (bitsandbytes)"
        double = ", double quant" if self.double_quant else ""
        return f"4-bit {self.type.upper()}{double}, compute {self.compute_dtype} (bitsandbytes)"

    @property
    def short(self) -> str:
        """For a table cell: nf4, fp4 or int8."""
        return "int8" if self.bits == 8 else self.type

    def weight_bytes(self, rows: int, columns: int) -> float:
        """Bytes one quantised rows x columns weight takes, quantisation constants included."""
        count = rows * columns
        if self.bits == 8:
            return count + 4 * rows
        blocks = -(-count // BLOCK)
        scales = blocks + 4 * -(-blocks // NESTED_BLOCK) if self.double_quant else 4 * blocks
        return count / 2 + scales


def installed() -> bool:
    """Whether bitsandbytes can be imported here (found, never imported)."""
    return importable("bitsandbytes")


def runs_jobs() -> bool:
    """Whether this environment runs jobs (it has torch, the train extra), rather than only checking specs."""
    return importable("torch")
