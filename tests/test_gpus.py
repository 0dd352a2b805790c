"""GPU assignment: each device to at most one server, clear refusals, restore after a hub restart."""

import itertools
import random
import threading

import pytest

from hub_ext.host.gpus import GpuAllocator, GpuUnavailable, detect_gpus


def owners_of(allocator: GpuAllocator) -> dict[str, str]:
    """device -> owner, failing if any device has two owners."""
    seen: dict[str, str] = {}
    for owner, devices in allocator.in_use().items():
        for device in devices:
            assert device not in seen, f"GPU {device} held by {seen[device]} and {owner}"
            seen[device] = owner
    return seen


def test_allocate_hands_out_free_devices_in_order():
    gpus = GpuAllocator(["0", "1", "2", "3"])
    assert gpus.allocate("alice", 1) == ["0"]
    assert gpus.allocate("bob", 2) == ["1", "2"]
    assert gpus.allocate("carol", 0) == []
    assert gpus.in_use() == {"alice": ["0"], "bob": ["1", "2"]}


def test_refuses_when_not_enough_are_free():
    gpus = GpuAllocator(["0", "1"])
    gpus.allocate("alice", 1)
    with pytest.raises(GpuUnavailable) as e:
        gpus.allocate("bob", 2)
    assert str(e.value) == (
        "This profile needs 2 GPU(s) but only 1 of the machine's 2 are free; try again when "
        "a GPU server stops, or choose a profile without GPU."
    )
    assert gpus.in_use() == {"alice": ["0"]}  # a refusal takes nothing


def test_machine_without_gpus():
    gpus = GpuAllocator([])
    assert gpus.allocate("alice", 0) == []
    with pytest.raises(GpuUnavailable) as e:
        gpus.allocate("alice", 1)
    assert str(e.value).startswith("This profile needs 1 GPU(s) but only 0 of the machine's 0")


def test_negative_count_is_refused():
    gpus = GpuAllocator(["0", "1", "2"])
    with pytest.raises(ValueError) as e:
        gpus.allocate("alice", -1)
    assert str(e.value) == "GPU count must be 0 or more, not -1"
    assert gpus.in_use() == {}


def test_reallocating_replaces_the_owners_previous_devices():
    gpus = GpuAllocator(["0", "1"])
    gpus.allocate("alice", 2)
    assert gpus.allocate("alice", 1) == ["0"]
    assert gpus.allocate("bob", 1) == ["1"]
    assert gpus.allocate("alice", 0) == []
    assert gpus.in_use() == {"bob": ["1"]}


def test_release_frees_devices():
    gpus = GpuAllocator(["0", "1"])
    gpus.allocate("alice", 2)
    gpus.release("alice")
    gpus.release("never-allocated")  # harmless
    assert gpus.in_use() == {}
    assert gpus.allocate("bob", 2) == ["0", "1"]


def test_restore_after_hub_restart_never_hands_those_out_again():
    gpus = GpuAllocator(["0", "1", "2"])
    gpus.restore("alice", ["1"])
    gpus.restore("bob", ["7"])  # a device this machine no longer has is dropped
    assert gpus.in_use() == {"alice": ["1"], "bob": []}
    assert gpus.allocate("carol", 2) == ["0", "2"]
    with pytest.raises(GpuUnavailable):
        gpus.allocate("dave", 1)
    gpus.release("alice")
    assert gpus.allocate("dave", 1) == ["1"]
    owners_of(gpus)


def test_in_use_is_a_copy():
    gpus = GpuAllocator(["0"])
    gpus.allocate("alice", 1)
    gpus.in_use()["alice"].append("9")
    assert gpus.in_use() == {"alice": ["0"]}


def test_random_sequences_never_share_a_device():
    rng = random.Random(1234)
    gpus = GpuAllocator([str(i) for i in range(4)])
    owners = [f"user{i}" for i in range(6)]
    for _ in range(2000):
        owner = rng.choice(owners)
        action = rng.random()
        if action < 0.6:
            try:
                got = gpus.allocate(owner, rng.randint(0, 3))
            except GpuUnavailable:
                assert owner not in gpus.in_use()
            else:
                assert gpus.in_use().get(owner, []) == got
        else:
            gpus.release(owner)
        held = owners_of(gpus)
        assert set(held) <= set(gpus.devices)


def test_concurrent_allocations_never_share_a_device():
    gpus = GpuAllocator([str(i) for i in range(8)])
    barrier = threading.Barrier(16)
    results: dict[str, list[str] | None] = {}

    def grab(owner: str) -> None:
        barrier.wait()
        try:
            results[owner] = gpus.allocate(owner, 1)
        except GpuUnavailable:
            results[owner] = None

    threads = [threading.Thread(target=grab, args=(f"user{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results.values() if r is not None]
    assert len(granted) == 8
    assert sorted(itertools.chain.from_iterable(granted)) == [str(i) for i in range(8)]
    owners_of(gpus)


# ------------------------------------------------------------ detect_gpus


def fake_nvidia_smi(tmp_path, monkeypatch, script: str) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_detect_gpus_without_a_driver(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


def test_detect_gpus_lists_indices(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, 'printf "0\\n1\\n\\n"\n')
    assert detect_gpus() == ["0", "1"]


def test_detect_gpus_when_nvidia_smi_fails(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA-SMI has failed"; exit 9\n')
    assert detect_gpus() == []
