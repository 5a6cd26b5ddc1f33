import threading

import pytest
import torch

from unimat_core.model.lanes import map_in_lanes, sampling_lanes


def test_lanes_run_batches_at_once_on_one_thread_each_and_keep_their_order():
    torch.set_num_threads(2)
    barrier = threading.Barrier(2, timeout=10)  # broken unless two items run at the same time
    seen_threads = []

    def work(item: int) -> int:
        seen_threads.append(torch.get_num_threads())
        if item < 2:
            barrier.wait()
        return item * item

    assert list(map_in_lanes(work, range(5), lanes=2)) == [0, 1, 4, 9, 16]
    assert seen_threads == [1] * 5 and torch.get_num_threads() == 2  # the budget comes back afterwards


def test_a_failing_batch_raises_and_restores_the_thread_budget():
    torch.set_num_threads(2)

    def work(item: int) -> int:
        if item == 1:
            raise ValueError("bad batch")
        return item

    with pytest.raises(ValueError, match="bad batch"):
        list(map_in_lanes(work, range(6), lanes=2))
    assert torch.get_num_threads() == 2


def test_one_lane_is_a_plain_loop_and_a_gpu_takes_one_lane():
    torch.set_num_threads(2)
    assert list(map_in_lanes(lambda i: i + 1, [1, 2], lanes=1)) == [2, 3]
    assert sampling_lanes(torch.device("cpu")) == 2 and sampling_lanes(torch.device("cuda")) == 1
