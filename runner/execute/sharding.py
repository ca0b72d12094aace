"""Sharded training (FSDP2): the model built on the meta device, sharded per transformer block and
at the root, each process reading only its own slices of the weights. For any WORLD_SIZE, RANK
and LOCAL_RANK that torchrun gives (one box or several), and for one process (CPU offload).

    build    the model class from the config on the meta device (buffers are real), the plan's
             trainable selection and LoRA adapters applied, trained parameters in fp32 (the master
             copy; FSDP reduces one dtype per group of trained parameters)
    shard    fully_shard each transformer block, then the root (embeddings, final norm, head):
             bf16 compute and fp32 gradient reduction when the plan computes in bf16, the shards in
             CPU memory when it offloads
    load     parameters materialised empty where they live; each process reads its slices of the
             base weights from the safetensors files (torch.distributed.checkpoint's Hugging Face
             reader reads slices, so no process holds a full copy); adapters get their seeded values
    gather   after training, the full state on rank 0 in CPU memory, in an ordinary model for the
             samples, the card and save_pretrained (an ordinary Hugging Face folder)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from runner.errors import RunnerError
from runner.execute import loading
from runner.execute import trainable as trained
from runner.methods import registry
from runner.plan.models import Plan
from runner.model.skeleton import model_class
from runner.model.source import ModelLocation


def device_of(kind: str) -> torch.device:
    """This process's device for the plan's `hardware.device` (cpu | cuda): its GPU under torchrun."""
    if kind == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed(device: torch.device) -> None:
    """Join the run's process group (torchrun's environment), or make a group of one."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def build(plan: Plan, location: ModelLocation):
    """The model to train, sharded over the run's processes, holding the base weights."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    device = device_of(plan.settings.hardware.device.value)
    init_distributed(device)
    folder, kwargs, model = _skeleton(plan, location)
    blocks = set(getattr(_inner(model), "_no_split_modules", None) or ())
    if not blocks:
        raise RunnerError(f"{type(_inner(model)).__name__} does not name its transformer blocks (_no_split_modules)",
                          "set hardware.strategy: ddp")
    half = plan.settings.hardware.precision.value == "bf16"
    offload = bool(plan.settings.hardware.offload.value)
    options = dict(mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if half
                   else MixedPrecisionPolicy(), offload_policy=CPUOffloadPolicy() if offload else OffloadPolicy())
    for module in _inner(model).modules():
        if type(module).__name__ in blocks:
            fully_shard(module, **options)
    fully_shard(_inner(model), **options)  # the root: generate() calls the inner model, not PEFT's wrapper

    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model.to_empty(device="cpu" if offload else device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    _inner(model).tie_weights()
    _read_slices(model, _local_folder(folder, kwargs))
    trained.initialise_adapters(model, plan.settings.training.seed.value)
    return model


def gather(model, plan: Plan, location: ModelLocation):
    """The trained model, whole, in CPU memory on rank 0 (None on the other processes); every
    process calls this."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    *_, whole = _skeleton(plan, location)
    missing, unexpected = whole.load_state_dict(state, assign=True, strict=False)
    _inner(whole).tie_weights()
    every = {name for name, _ in whole.named_parameters(remove_duplicate=False)}
    tied = every - {name for name, _ in whole.named_parameters()}
    if unexpected or set(missing) - tied:
        raise RunnerError(f"the gathered model does not match its own structure (missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]})", "this is a bug in runner; please report it")
    return whole


# --- pieces -------------------------------------------------------------------------------------

def _skeleton(plan: Plan, location: ModelLocation):
    """(where the weights are, how to load them, the model on the meta device with the plan's
    trainable selection)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    folder, kwargs = loading.weights_source(location)
    config = AutoConfig.from_pretrained(folder, **kwargs)
    with init_empty_weights():  # parameters on the meta device; buffers (rotary frequencies) computed
        model = model_class(registry.get(plan.method).head).from_config(config, dtype=loading.weights_dtype(plan),
                                                     trust_remote_code=location.trust_remote_code)
    model.tie_weights()  # init_empty_weights makes each parameter anew, untying the shared ones
    model = trained.apply(model, plan)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return folder, kwargs, model


def _inner(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def _local_folder(folder: str, kwargs: dict) -> Path:
    """A hub model not in the cache yet is downloaded (weights and configs) by every process; the
    hub client locks its cache."""
    if Path(folder).is_dir():
        return Path(folder)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(folder, revision=kwargs.get("revision"), allow_patterns=["*.safetensors", "*.json"]))


def _read_slices(model, folder: Path) -> None:
    """Each parameter's slice of its base weight, read from the safetensors files; a weight that
    several parameters start from (PEFT's module copies) is read once and copied."""
    import torch.distributed.checkpoint as dcp

    reader = dcp.HuggingFaceStorageReader(str(folder))
    stored = reader.read_metadata().state_dict_metadata
    targets, copies = {}, []
    for name, parameter in model.named_parameters():
        source = trained.source_name(name)
        if source is None:
            continue
        if source not in stored:
            raise RunnerError(f"{folder} has no weight {source} for {name}",
                              "sharded loading reads safetensors files with the model's own parameter names; "
                              "set hardware.strategy: ddp")
        if source in targets:
            copies.append((parameter, targets[source]))
        else:
            targets[source] = parameter
    dcp.load(targets, storage_reader=reader)
    with torch.no_grad():
        for parameter, original in copies:
            parameter.copy_(original)
