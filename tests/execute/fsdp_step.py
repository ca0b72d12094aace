"""One SFT step under FSDP, run by torchrun for tests/execute/test_sharding.py:

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/execute/fsdp_step.py OUT PLAN...

For each plan: the executor's sharded model (sharding.build), the first batch of the plan's
training rows split over the processes as the SFT loop splits them, one forward and backward
(sft.prepared, sft.accumulate_gradients), then rank 0 writes OUT/<plan name>.safetensors with the step's
loss and every full (all-gathered) gradient.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runner.execute import loading, sharding  # noqa: E402
from runner.execute.batches import step_micro_batches  # noqa: E402
from runner.execute.data import prepare  # noqa: E402
from runner.execute.settings import RunSettings  # noqa: E402
from runner.methods.sft import accumulate_gradients, prepared  # noqa: E402
from runner.plan.models import Plan  # noqa: E402


def one_step(plan: Plan) -> dict[str, torch.Tensor]:
    location = loading.location_of(plan)
    tokenizer = loading.load_tokenizer(location)
    torch.manual_seed(plan.settings.training.seed.value)
    model = prepared(sharding.build(plan, location), RunSettings.of_plan(plan).training)
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = prepare(plan, tokenizer)["train"].examples[:plan.settings.training.batch_size.value]
    micros, targets, _ = step_micro_batches(
        rows, micro=plan.settings.training.micro_batch_size.value, packing=plan.settings.method["packing"].value,
        max_length=plan.settings.training.max_length.value, pad_id=tokenizer.pad_token_id, rank=rank, world=world)
    model.train()
    loss = accumulate_gradients(model, micros, targets, world, torch.device("cpu"))
    dist.all_reduce(loss)
    result = {name: parameter.grad.full_tensor() for name, parameter in model.named_parameters()
              if parameter.grad is not None}
    return {**result, "loss": loss.reshape(1)}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for plan_file in sys.argv[2:]:
        plan = Plan.model_validate_json(Path(plan_file).read_text())
        tensors = one_step(plan)
        if dist.get_rank() == 0:
            save_file({name: tensor.contiguous() for name, tensor in tensors.items()},
                      out / f"{Path(plan_file).stem}.safetensors")
    dist.barrier()  # no process leaves while another still writes or talks
    dist.destroy_process_group()
