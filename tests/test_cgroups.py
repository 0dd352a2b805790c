"""cgroup drivers: exact files on a fake v2 root, real v1 limits on this machine, the rlimit fallback."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hub_ext.cgroups import (
    CGROUP_ROOT,
    CgroupDriver,
    CgroupV1,
    CgroupV2,
    Limits,
    RlimitFallback,
    describe_process,
    detect_driver,
)

MiB = 2**20
GiB = 2**30


def fake_v2_root(tmp_path: Path, controllers="cpuset cpu io memory hugetlb pids", enabled=""):
    """The interface files the kernel provides at a cgroup2 mount (and in the parent)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(enabled + "\n" if enabled else "")
    return root


def read(path: Path) -> str:
    return path.read_text()


# ------------------------------------------------------------------ cgroup v2


@pytest.mark.parametrize(
    "limits, files",
    [
        (
            Limits(cpu_limit=1.5, cpu_guarantee=0.5, mem_limit=2 * GiB, mem_guarantee=512 * MiB),
            {
                "memory.max": "2147483648",
                "memory.low": "536870912",
                "memory.swap.max": "0",
                "cpu.max": "150000 100000",
                "cpu.weight": "50",
            },
        ),
        (
            Limits(),
            {
                "memory.max": "max",
                "memory.low": "0",
                "memory.swap.max": "max",
                "cpu.max": "max 100000",
                "cpu.weight": "100",
            },
        ),
        (
            # a tiny CPU limit is raised to the kernel's 1 ms minimum quota,
            # a tiny guarantee to the least weight
            Limits(cpu_limit=0.001, cpu_guarantee=0.001),
            {
                "memory.max": "max",
                "memory.low": "0",
                "memory.swap.max": "max",
                "cpu.max": "1000 100000",
                "cpu.weight": "1",
            },
        ),
        (
            Limits(cpu_limit=256, cpu_guarantee=200),
            {
                "memory.max": "max",
                "memory.low": "0",
                "memory.swap.max": "max",
                "cpu.max": "25600000 100000",
                "cpu.weight": "10000",
            },
        ),
    ],
)
def test_v2_writes_exactly(tmp_path, limits, files):
    root = fake_v2_root(tmp_path)
    parent = root / "sy"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("")
    # present when the kernel accounts swap; the driver must fill it in
    (parent / "alice").mkdir()
    (parent / "alice" / "memory.swap.max").write_text("max\n")

    driver = CgroupV2("sy", root)
    driver.create("alice", limits)

    written = {p.name: read(p) for p in (parent / "alice").iterdir()}
    assert written == files
    assert read(root / "cgroup.subtree_control") == "+memory +cpu"
    assert read(parent / "cgroup.subtree_control") == "+memory +cpu"
    assert driver.directories("alice") == [parent / "alice"]
    assert driver.exists("alice") and not driver.exists("bob")


def test_v2_without_swap_accounting_writes_no_swap_file(tmp_path):
    root = fake_v2_root(tmp_path)
    (root / "sy").mkdir()
    (root / "sy" / "cgroup.subtree_control").write_text("")
    CgroupV2("sy", root).create("alice", Limits(mem_limit=GiB))
    assert sorted(p.name for p in (root / "sy" / "alice").iterdir()) == [
        "cpu.max",
        "cpu.weight",
        "memory.low",
        "memory.max",
    ]


@pytest.mark.parametrize(
    "root_enabled, parent_enabled, root_written, parent_written",
    [
        ("cpu memory io", "memory cpu", "cpu memory io\n", "memory cpu\n"),  # nothing to enable
        ("cpu io", "", "+memory", "+memory +cpu"),
        ("memory", "memory", "+cpu", "+cpu"),
    ],
)
def test_v2_enables_only_missing_controllers(
    tmp_path, root_enabled, parent_enabled, root_written, parent_written
):
    root = fake_v2_root(tmp_path, enabled=root_enabled)
    (root / "sy").mkdir()
    (root / "sy" / "cgroup.subtree_control").write_text(
        parent_enabled + "\n" if parent_enabled else ""
    )
    CgroupV2("sy", root).create("alice", Limits())
    assert read(root / "cgroup.subtree_control") == root_written
    assert read(root / "sy" / "cgroup.subtree_control") == (parent_written or "")


def test_v2_pids(tmp_path):
    root = fake_v2_root(tmp_path)
    (root / "sy" / "alice").mkdir(parents=True)
    (root / "sy" / "alice" / "cgroup.procs").write_text("123\n456\n")
    driver = CgroupV2("sy", root)
    assert driver.pids("alice") == {123, 456}
    assert driver.pids("nobody") == set()


@pytest.mark.ci_may_skip("the host's cgroup layout decides which of these run")
@pytest.mark.skipif(
    "0::" not in Path("/proc/self/cgroup").read_text(),
    reason="this host mounts no cgroup2 hierarchy, so /proc/self/cgroup has no 0:: line",
)
def test_describe_process_reads_v2_files(tmp_path):
    root = fake_v2_root(tmp_path)
    v2_path = next(
        line.split(":", 2)[2]
        for line in Path("/proc/self/cgroup").read_text().splitlines()
        if line.startswith("0::")
    )
    directory = root / v2_path.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.max").write_text("1073741824\n")
    (directory / "memory.current").write_text("4096\n")
    (directory / "cpu.max").write_text("150000 100000\n")
    assert describe_process(os.getpid(), root) == {
        "kind": "cgroup2",
        "path": v2_path,
        "mem_limit": GiB,
        "mem_usage": 4096,
        "cpu_limit": 1.5,
    }
    (directory / "memory.max").write_text("max\n")
    (directory / "cpu.max").write_text("max 100000\n")
    assert describe_process(os.getpid(), root)["mem_limit"] is None
    assert describe_process(os.getpid(), root)["cpu_limit"] is None


def test_describe_process_without_such_process(tmp_path):
    assert describe_process(2**22 + 12345, tmp_path) == {
        "kind": "none",
        "path": None,
        "mem_limit": None,
        "mem_usage": None,
        "cpu_limit": None,
    }


# ------------------------------------------------------------ detect_driver


def test_detect_v2(tmp_path):
    root = fake_v2_root(tmp_path)
    driver = detect_driver("sy", root)
    assert (type(driver), driver.parent, driver.root) == (CgroupV2, "sy", root)


def test_detect_v1(tmp_path):
    for controller in ("memory", "cpu"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    driver = detect_driver("sy", tmp_path)
    assert (type(driver), driver.parent, driver.root) == (CgroupV1, "sy", tmp_path)


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"cgroup.controllers": "cpu io pids"},  # v2 without the memory controller
        {"memory/cgroup.procs": ""},  # v1 with memory but no cpu hierarchy
    ],
)
def test_detect_falls_back_to_rlimits(tmp_path, layout):
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    driver = detect_driver("sy", tmp_path)
    assert type(driver) is RlimitFallback
    assert driver.enforces_total is False


@pytest.mark.root
@pytest.mark.ci_may_skip("the host's cgroup layout decides which of these run")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
@pytest.mark.skipif(
    (CGROUP_ROOT / "cgroup.controllers").exists()
    or not (CGROUP_ROOT / "memory" / "cgroup.procs").exists(),
    reason="this host is not a cgroup v1 host",
)
def test_detect_driver_picks_v1_on_this_host():
    driver = detect_driver()
    assert type(driver) is CgroupV1
    assert (driver.parent, driver.root) == ("shipyard", CGROUP_ROOT)


def test_driver_subclass_must_name_its_kind():
    with pytest.raises(TypeError) as e:

        class Nameless(CgroupDriver):
            pass

    assert str(e.value) == "Nameless must set `kind`"


# ------------------------------------------------------------ cgroup v1, for real


@pytest.fixture
def v1_driver():
    if not CgroupV1.available():
        pytest.skip("no writable cgroup v1 memory and cpu hierarchies on this host")
    parent = f"shipyard-unit-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    driver = CgroupV1(parent)
    try:
        yield driver
    finally:
        for hierarchy in ("memory", "cpu"):
            top = CGROUP_ROOT / hierarchy / parent
            if not top.exists():
                continue
            for child in top.iterdir():
                if child.is_dir():
                    driver.remove(child.name, timeout=5)
            top.rmdir()


def v1_files(driver: CgroupV1, name: str) -> dict[str, str]:
    memory, cpu = driver.directories(name)
    names = ["memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes"]
    files = {n: (memory / n).read_text().strip() for n in names if (memory / n).exists()}
    for n in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"):
        files[n] = (cpu / n).read_text().strip()
    return files


def expected_v1(memory: str, soft: str, quota: str, shares: str, memsw: str) -> dict[str, str]:
    files = {
        "memory.limit_in_bytes": memory,
        "memory.soft_limit_in_bytes": soft,
        "cpu.cfs_quota_us": quota,
        "cpu.cfs_period_us": "100000",
        "cpu.shares": shares,
    }
    if (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists():
        files["memory.memsw.limit_in_bytes"] = memsw
    return files


def controller_paths(pid: int) -> dict[str, str]:
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


#: what the kernel reads back for "no limit" (LONG_MAX rounded down to a page)
V1_UNLIMITED = str(2**63 - 1 - (2**63 - 1) % os.sysconf("SC_PAGE_SIZE"))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
def test_v1_confines_a_process_and_removes_it(v1_driver):
    driver = v1_driver
    limits = Limits(cpu_limit=1.5, cpu_guarantee=0.5, mem_limit=256 * MiB, mem_guarantee=128 * MiB)
    driver.create("alice", limits)
    assert v1_files(driver, "alice") == expected_v1(
        memory="268435456", soft="134217728", quota="150000", shares="512", memsw="268435456"
    )

    proc = subprocess.Popen(["sleep", "60"], preexec_fn=driver.preexec("alice"))  # noqa: S603, S607
    try:
        paths = controller_paths(proc.pid)
        assert paths["memory"] == f"/{driver.parent}/alice"
        assert paths["cpu"] == f"/{driver.parent}/alice"
        assert driver.pids("alice") == {proc.pid}
        described = describe_process(proc.pid)
        assert isinstance(described.pop("mem_usage"), int)
        assert described == {
            "kind": "cgroup1",
            "path": f"/{driver.parent}/alice",
            "mem_limit": 256 * MiB,
            "cpu_limit": 1.5,
        }

        driver.remove("alice")
        assert proc.wait(timeout=5) == -9
        assert not driver.exists("alice")
        assert [d.exists() for d in driver.directories("alice")] == [False, False]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
def test_v1_unlimited(v1_driver):
    v1_driver.create("bob", Limits())
    assert v1_files(v1_driver, "bob") == expected_v1(
        memory=V1_UNLIMITED, soft=V1_UNLIMITED, quota="-1", shares="1024", memsw=V1_UNLIMITED
    )
    proc = subprocess.Popen(["sleep", "60"], preexec_fn=v1_driver.preexec("bob"))  # noqa: S603, S607
    try:
        described = describe_process(proc.pid)
        assert (described["mem_limit"], described["cpu_limit"]) == (None, None)
    finally:
        v1_driver.remove("bob")
        assert proc.wait(timeout=5) == -9


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
def test_v1_create_resets_limits_up_and_down(v1_driver):
    """Re-creating a cgroup with a higher or no memory limit works despite the old memsw limit."""
    v1_driver.create("carol", Limits(mem_limit=256 * MiB, cpu_limit=1))
    v1_driver.create("carol", Limits(mem_limit=512 * MiB, cpu_limit=2, cpu_guarantee=2))
    assert v1_files(v1_driver, "carol") == expected_v1(
        memory="536870912", soft=V1_UNLIMITED, quota="200000", shares="2048", memsw="536870912"
    )
    v1_driver.create("carol", Limits())
    assert v1_files(v1_driver, "carol") == expected_v1(
        memory=V1_UNLIMITED, soft=V1_UNLIMITED, quota="-1", shares="1024", memsw=V1_UNLIMITED
    )
    v1_driver.create("carol", Limits(mem_limit=128 * MiB))
    assert v1_files(v1_driver, "carol")["memory.limit_in_bytes"] == "134217728"


# ------------------------------------------------------------ rlimit fallback


def _address_space(limits_text: str) -> str:
    line = next(line for line in limits_text.splitlines() if line.startswith("Max address space"))
    return " ".join(line.split()[3:])


def address_space_limit(driver: RlimitFallback, name: str) -> str:
    """The 'Max address space' of a child started with ``driver.preexec(name)``."""
    out = subprocess.run(  # noqa: S603
        [shutil.which("cat") or "/bin/cat", "/proc/self/limits"],
        preexec_fn=driver.preexec(name),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return _address_space(out)


#: what a child inherits when the driver sets nothing (normally "unlimited unlimited bytes")
INHERITED = _address_space(Path("/proc/self/limits").read_text())


def test_rlimit_fallback_caps_the_childs_address_space():
    driver = RlimitFallback("sy")
    driver.create("alice", Limits(mem_limit=512 * MiB, cpu_limit=1))
    assert address_space_limit(driver, "alice") == "536870912 536870912 bytes"
    # the hub process itself is untouched
    assert _address_space(Path("/proc/self/limits").read_text()) == INHERITED


def test_rlimit_fallback_without_limits():
    driver = RlimitFallback("sy")
    driver.create("bob", Limits(cpu_limit=2))
    assert address_space_limit(driver, "bob") == INHERITED
    assert address_space_limit(driver, "never-created") == INHERITED


def test_rlimit_fallback_has_no_cgroup():
    driver = RlimitFallback("sy")
    driver.create("alice", Limits(mem_limit=GiB))
    assert (driver.kind, driver.enforces_total) == ("rlimit", False)
    assert (driver.directories("alice"), driver.exists("alice"), driver.pids("alice")) == (
        [],
        False,
        set(),
    )
    driver.remove("alice")
    assert address_space_limit(driver, "alice") == INHERITED


def test_rlimit_preexec_runs_in_the_child_only():
    driver = RlimitFallback("sy")
    driver.create("alice", Limits(mem_limit=GiB))
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_AS))"
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        preexec_fn=driver.preexec("alice"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"({GiB}, {GiB})\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
def test_remove_parent_only_when_nothing_is_left_in_it(v1_driver):
    """A stopped Shipyard leaves no empty parent cgroup; one still in use stays."""
    parent = [CGROUP_ROOT / c / v1_driver.parent for c in ("memory", "cpu")]
    v1_driver.create("kept", Limits(mem_limit=256 * MiB))
    assert not v1_driver.remove_parent(), "a parent with a cgroup in it stays"
    assert all(p.is_dir() for p in parent)
    v1_driver.remove("kept")
    assert v1_driver.remove_parent()
    assert not any(p.exists() for p in parent)
    assert v1_driver.remove_parent(), "no parent at all is fine too"
    assert RlimitFallback("x").remove_parent(), "nothing to remove without cgroups"
