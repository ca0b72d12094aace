"""Devices: GPUs shared by the plans' estimates, and never started on with less free memory than that."""

from runner.daemon.resources import Devices, Gpu

GIB = 1 << 30


def box(*memory_gib):
    return Devices([Gpu(index, size * GIB) for index, size in enumerate(memory_gib)])


def take(devices, job, count, gib):
    """Start a job the way the scheduler does: fit, then reserve."""
    fit = devices.fit("cuda", count, gib * GIB)
    if isinstance(fit, list):
        devices.reserve(job, fit, gib * GIB)
    return fit


def test_jobs_that_fit_share_a_gpu_and_others_wait():
    devices = box(80)
    assert take(devices, 1, 1, 30) == [0]
    assert take(devices, 2, 1, 30) == [0]  # 60 of 80 GiB
    assert take(devices, 3, 1, 30) == "1 GPU with 30.0 GiB free (GPU 0 has 20.0 GiB)"
    devices.release(1)
    assert take(devices, 3, 1, 30) == [0]


def test_multi_gpu_jobs_take_the_freest_gpus():
    devices = box(80, 80, 80)
    assert take(devices, 1, 1, 70) == [0]
    assert sorted(take(devices, 2, 2, 40)) == [1, 2]
    assert sorted(take(devices, 3, 2, 20)) == [1, 2]
    assert sorted(take(devices, 4, 3, 5)) == [0, 1, 2]
    assert isinstance(take(devices, 5, 3, 9), str)


def test_free_memory_counts_what_others_use_and_what_our_jobs_have_yet_to_allocate():
    devices = box(80)
    gpu = devices.gpus[0]
    gpu.free_bytes = 30 * GIB  # someone else's notebook holds 50 GiB
    assert take(devices, 1, 1, 40) == "1 GPU with 40.0 GiB free (GPU 0 has 30.0 GiB)"
    assert take(devices, 1, 1, 20) == [0]
    assert gpu.room == 10 * GIB  # the new job has allocated nothing yet: its 20 GiB are still to come
    gpu.free_bytes, gpu.used = 15 * GIB, {1: 15 * GIB}  # it allocated 15 of its 20
    assert gpu.room == 10 * GIB
    gpu.free_bytes, gpu.used = 5 * GIB, {1: 25 * GIB}  # beyond its estimate: what is free is what is free
    assert gpu.room == 5 * GIB


def test_a_job_larger_than_the_box_never_fits():
    devices = box(80, 24)
    assert devices.never_fits("cuda", 1, 70 * GIB) is None
    assert devices.never_fits("cuda", 2, 70 * GIB) == "it needs 2 GPUs of 70.0 GiB; this box has GPU 0 of 80.0 GiB, " \
                                                      "GPU 1 of 24.0 GiB"
    assert devices.never_fits("cuda", 3, GIB) is not None
    assert box().never_fits("cuda", 8, 500 * GIB) is None  # no GPU here: it runs on the CPU slot


def test_cpu_jobs_run_one_at_a_time():
    devices = box()
    assert devices.fit("cpu", 1, GIB) == []
    devices.reserve(1, [], GIB)
    assert devices.fit("cpu", 1, GIB) == "the CPU slot (job #1 runs on it)"
    devices.release(1)
    assert devices.fit("cuda", 1, GIB) == []  # no GPU on this box: it runs on the CPU slot
