"""Every rank stops after the same step, whichever rank the stop signal reached."""

import threading

import torch.distributed as dist
import torch.multiprocessing as mp

from runner.execute.stopping import AgreedStop


def _rank(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        stop = threading.Event()
        stopping = AgreedStop(stop, world)
        for step in range(1, 10):
            if rank == 1 and step == 3:
                stop.set()  # the signal reaches rank 1 during step 3, and rank 0 never
            if stopping.after_step():
                results[rank] = (step, stop.is_set())
                return
        results[rank] = (None, stop.is_set())
    finally:
        dist.destroy_process_group()


def test_a_stop_that_reached_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(2, str(tmp_path / "store"), results), nprocs=2)
        assert dict(results) == {0: (4, True), 1: (4, True)}  # decided on the flags shared after step 3


def test_one_process_stops_after_the_step_it_was_signalled_in():
    stop = threading.Event()
    stopping = AgreedStop(stop, world=1)
    assert not stopping.after_step()
    stop.set()
    assert stopping.after_step()
