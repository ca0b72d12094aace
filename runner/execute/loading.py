"""Load the tokenizer and the model a plan names, in the dtype the plan's precision implies.

GGUF files are dequantised by transformers (with the gguf package). transformers keeps
`quantization_config: {quant_method: gguf}` on such a model, and the trainers then refuse
to train it, so the weights are loaded once, rebuilt into a model made from the clean
config, and saved as safetensors beside the cached config and tokenizer.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from runner.errors import RunnerError
from runner.fsutil import cache_directory, cached_record, file_sha256, stat_key
from runner.manifest import WeightsOrigin
from runner.methods.registry import SCORE
from runner.model import source
from runner.plan.models import ModelIdentity, Plan, QuantizedBase
from runner.model.skeleton import model_class
from runner.model.source import ModelLocation

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def location_of(plan: Plan, model: ModelIdentity | None = None) -> ModelLocation:
    """Where a model recorded in the plan is (the base model unless another is named): no new
    lookup, the plan is what runs."""
    model = model or plan.inputs.base_model
    local = model.kind != "hub" or Path(model.location).is_absolute()  # a hub model is local once cached
    return ModelLocation(
        model.kind, model.reference, Path(model.location) if local else None,
        hub_id=model.reference if model.kind in ("hub", "offline_copy") else None, revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        job_run=Path(model.job_run) if model.job_run else None)


def weights_dtype(plan: Plan) -> torch.dtype:
    """fp32 master weights, except a frozen LoRA base, which is stored in the compute dtype."""
    precision = plan.settings.hardware.precision.value
    return DTYPES[precision] if plan.trainable.mode == "lora" else torch.float32


def load_tokenizer(location: ModelLocation):
    tokenizer = source.load_tokenizer(location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(location: ModelLocation, head: str, dtype: torch.dtype, *, pad_token_id: int | None = None,
               quantized: QuantizedBase | None = None, device: str = "cpu"):
    """The model with the head a method trains (runner.methods.registry: CAUSAL_LM or SCORE); with
    `quantized`, its linear weights stored by bitsandbytes on `device` (where they are quantised), and
    checked to be exactly the weights the plan counted."""
    folder, kwargs = weights_source(location)
    extra = {"num_labels": 1} if head == SCORE else {}
    if quantized is not None:
        extra.update(quantization_config=bitsandbytes_config(quantized), device_map={"": device})
    model = model_class(head).from_pretrained(folder, dtype=dtype, **kwargs, **extra)
    if head == SCORE and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id  # the score is read at the last non-pad token
    if quantized is not None:
        keep_stored_layout(model)
        stored = sorted(quantized_names(model))
        if stored != sorted(quantized.quantized):
            raise RunnerError(f"bitsandbytes quantized {len(stored)} weights of the model; the plan counted "
                              f"{len(quantized.quantized)}", "make a new plan with this version of transformers")
    return model


def load_base(plan: Plan, head: str, *, pad_token_id: int | None = None, device: str = "cpu"):
    """The plan's base model as a run trains it: in the dtype its precision implies, quantized as it says."""
    return load_model(location_of(plan), head, weights_dtype(plan), pad_token_id=pad_token_id,
                      quantized=plan.trainable.quantized, device=device)


def bitsandbytes_config(quantized: QuantizedBase):
    from transformers import BitsAndBytesConfig

    if quantized.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantized.type,
                              bnb_4bit_use_double_quant=quantized.double_quant,
                              bnb_4bit_compute_dtype=DTYPES[quantized.compute_dtype])


def keep_stored_layout(model) -> None:
    """Keep every 4-bit weight in the layout bitsandbytes quantised it in. On a CPU with AVX512-BF16,
    bitsandbytes (0.50) repacks a 4-bit weight in place into a CPU layout of its own the first time its layer
    runs in eval mode without gradients (a sample before training, an eval during it). Measured on such a CPU:
    the packed product has no backward, so every adapter upstream of a packed layer then gets no gradient
    (LoRA silently trains nothing); the stored codes and scales change, so the proof of change would report the
    base changed; and a layer whose input size is not a multiple of 64 fails. Every CPU then computes as the
    ones without AVX512-BF16 do."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def quantized_names(model) -> list[str]:
    """The parameters bitsandbytes stores quantized (4-bit Params4bit, 8-bit Int8Params)."""
    return [name for name, parameter in model.named_parameters()
            if type(parameter).__name__ in ("Params4bit", "Int8Params")]


def weights_source(location: ModelLocation) -> tuple[str, dict]:
    """What `from_pretrained` takes for the weights: the config's source, with a GGUF's weights
    dequantised into its companion folder first."""
    if location.is_gguf:
        dequantised_gguf(location.path)
    return source.pretrained_source(location)


def weights_origin(location: ModelLocation) -> WeightsOrigin:
    """What the manifest records about where the weights came from."""
    if location.is_gguf:
        return WeightsOrigin(path=str(location.path), format="gguf", sha256=file_sha256(location.path),
                             quantization=gguf_quantization(location.path),
                             dequantized_to=str(source.gguf_companion(location.path)))
    if location.path is None:
        return WeightsOrigin(path=location.hub_id, format="hub")
    return WeightsOrigin(path=str(location.path),
                         format="safetensors" if any(location.path.glob("*.safetensors")) else "bin")


def gguf_quantization(gguf_path: Path) -> str:
    """The GGUF file type and the count of each tensor type, like `MOSTLY_Q4_1 (Q4_1 x210, F32 x61)`.
    Reading a GGUF takes seconds (its tokenizer), so the answer is cached like the other GGUF facts."""

    def read() -> dict:
        from collections import Counter

        from gguf import GGUFReader, LlamaFileType

        reader = GGUFReader(gguf_path)
        field = reader.fields.get("general.file_type")
        kind = LlamaFileType(int(field.parts[field.data[0]][0])).name if field else "unknown file type"
        counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)
        return {"quantization": f"{kind} (" + ", ".join(f"{name} x{n}" for name, n in counts.most_common()) + ")"}

    cache_file = cache_directory() / "gguf-quantization" / f"{stat_key(gguf_path)}.json"
    return cached_record(cache_file, read, "quantization")["quantization"]


def dequantised_gguf(gguf_path: Path) -> Path:
    folder = source.gguf_companion(gguf_path)
    if any(folder.glob("*.safetensors")):
        return folder
    from transformers import AutoConfig, AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    state = loaded.state_dict()
    del loaded
    config = AutoConfig.from_pretrained(folder)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(state, strict=True)
    clean.tie_weights()
    staging = folder / f".weights.{id(state)}.tmp"
    clean.save_pretrained(staging)
    for weights in staging.glob("*.safetensors*"):
        weights.replace(folder / weights.name)  # same folder: each rename is atomic
    shutil.rmtree(staging)
    return folder


def load_result(run, plan):
    """The trained model of a run, on the CPU: its saved folder, or the base (quantized as the plan says)
    with the saved adapter."""
    from runner.methods import registry

    head = registry.get(plan.method).head
    if run.model.is_dir():
        location = ModelLocation("local", str(run.model), run.model)
        return load_model(location, head, torch.float32), load_tokenizer(location)
    location = base_location(plan)
    base = load_model(location, head, torch.float32, quantized=plan.trainable.quantized, device="cpu")
    from peft import PeftModel

    return PeftModel.from_pretrained(base, run.adapter), load_tokenizer(location)


def base_location(plan):
    """The base model of an adapter run on this machine: where it was trained from if that is still
    here; else the same hub model found again (the cache at the trained revision, then any revision,
    then the hub or an offline copy)."""
    from runner.model.source import locate
    from runner.spec.models import ModelSource

    trained = location_of(plan)
    if trained.path is None or trained.path.exists():
        return trained
    if trained.hub_id is None:
        raise RunnerError(f"the base model of this run, {plan.inputs.base_model.reference} ({trained.path}), "
                          "is not on this machine", "copy it to the same place, or use it on the training machine")
    revision = plan.inputs.base_model.revision if trained.kind == "hub" else None
    try:
        found = locate(ModelSource(hub=trained.hub_id, revision=revision), trained.path.parent, trained.path.parent)
    except RunnerError:
        if revision is None:
            raise
        found = locate(ModelSource(hub=trained.hub_id), trained.path.parent, trained.path.parent)
    if (found.kind, found.revision) != (trained.kind, trained.revision):
        print(f"note: trained on {trained.describe()}; using {found.describe()}", file=sys.stderr)
    return found
