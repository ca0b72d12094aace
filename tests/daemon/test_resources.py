from runner.daemon.resources import Devices, Gpu

GIB = 1 << 30


def box(*memory_gib):
    return Devices([Gpu(index, size * GIB) for index, size in enumerate(memory_gib)])


def test_jobs_that_fit_share_a_gpu_and_others_wait():
    devices = box(80)
    assert devices.reserve(1, "cuda", 1, 30 * GIB) == [0]
    assert devices.reserve(2, "cuda", 1, 30 * GIB) == [0]  # 60 of 80 GiB
    assert devices.reserve(3, "cuda", 1, 30 * GIB) is None  # would need 90
    devices.release(1)
    assert devices.reserve(3, "cuda", 1, 30 * GIB) == [0]


def test_multi_gpu_jobs_take_the_freest_gpus():
    devices = box(80, 80, 80)
    assert devices.reserve(1, "cuda", 1, 70 * GIB) == [0]
    assert sorted(devices.reserve(2, "cuda", 2, 40 * GIB)) == [1, 2]
    assert sorted(devices.reserve(3, "cuda", 2, 20 * GIB)) == [1, 2]
    assert sorted(devices.reserve(4, "cuda", 3, 5 * GIB)) == [0, 1, 2]
    assert devices.reserve(5, "cuda", 3, 9 * GIB) is None


def test_cpu_jobs_run_one_at_a_time():
    devices = box()
    assert devices.reserve(1, "cpu", 1, GIB) == []
    assert devices.reserve(2, "cpu", 1, GIB) is None
    devices.release(1)
    assert devices.reserve(2, "cuda", 1, GIB) == []  # no GPU on this box: it runs on the CPU slot
