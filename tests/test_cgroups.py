"""cgroup drivers: exact files on a fake v2 root, real v1 limits on this machine, the rlimit fallback."""

import contextlib
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hub_ext.host import bpfdev
from hub_ext.host.cgroups import (
    CGROUP_ROOT,
    CgroupDriver,
    CgroupPlacementError,
    CgroupV1,
    CgroupV2,
    Limits,
    RlimitFallback,
    describe_process,
    detect_driver,
    device_rule,
    device_rules,
    make_driver,
    systemd_base,
    systemd_is_init,
    unit_cgroup,
)
from hub_ext.host.gpus import parse_minor_numbers

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
        for hierarchy in ("memory", "cpu", "devices", "cpuacct"):
            top = CGROUP_ROOT / hierarchy / parent
            if not top.exists():
                continue
            for child in top.iterdir():
                if child.is_dir():
                    driver.remove(child.name, timeout=5)
            top.rmdir()


def v1_files(driver: CgroupV1, name: str) -> dict[str, str]:
    memory, cpu = driver.directories(name)[:2]
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
        assert not any(d.exists() for d in driver.directories("alice"))
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
    parent = [d.parent for d in v1_driver.directories("kept")]
    v1_driver.create("kept", Limits(mem_limit=256 * MiB))
    assert not v1_driver.remove_parent(), "a parent with a cgroup in it stays"
    assert all(p.is_dir() for p in parent)
    v1_driver.remove("kept")
    assert v1_driver.remove_parent()
    assert not any(p.exists() for p in parent)
    assert v1_driver.remove_parent(), "no parent at all is fine too"
    assert RlimitFallback("x").remove_parent(), "nothing to remove without cgroups"


# ------------------------------------------------------------ device filter (#14, point 9)

#: Opens each path given and prints "path ok" or "path <errno>".
OPEN_EACH = (
    "import sys\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        open(p, 'rb').close()\n"
    "        print(p, 'ok')\n"
    "    except OSError as e:\n"
    "        print(p, e.errno)\n"
)


def opened_in(driver: CgroupDriver, name: str, *paths) -> dict[str, str]:
    """What a child process in cgroup ``name`` gets when it opens each of ``paths``."""
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", OPEN_EACH, *map(str, paths)],
        preexec_fn=driver.preexec(name),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


@pytest.fixture
def devices_driver():
    """A real v1 driver whose cgroups may open only /dev/null besides their GPUs."""
    if not CgroupV1.available() or not (CGROUP_ROOT / "devices" / "devices.allow").exists():
        pytest.skip("no writable cgroup v1 memory, cpu and devices hierarchies on this host")
    parent = f"shipyard-unit-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    driver = CgroupV1(parent, standard_devices=("/dev/null",))
    try:
        yield driver
    finally:
        for directory in {d.parent for d in driver.directories("x")}:
            for child in directory.iterdir() if directory.exists() else []:
                if child.is_dir():
                    driver.remove(child.name, timeout=5)
        driver.remove_parent()


EPERM = str(1)


@pytest.mark.root
@pytest.mark.ci_may_skip("the host's cgroup layout decides whether v1 devices is there")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
def test_v1_device_filter_allows_null_and_refuses_zero(devices_driver):
    """The kernel, not an environment variable, decides which nodes a process opens."""
    driver = devices_driver
    assert driver.filters_devices
    driver.create("alice", Limits(mem_limit=256 * MiB))
    # outside the cgroup, both open; inside, only the allowed one
    assert opened_in(RlimitFallback("sy"), "nobody", "/dev/null", "/dev/zero") == {
        "/dev/null": "ok",
        "/dev/zero": "ok",
    }
    assert opened_in(driver, "alice", "/dev/null", "/dev/zero") == {
        "/dev/null": "ok",
        "/dev/zero": EPERM,
    }
    devices = driver.directories("alice")[2]
    assert devices == CGROUP_ROOT / "devices" / driver.parent / "alice"
    listed = (devices / "devices.list").read_text().splitlines()
    assert listed == ["c 1:3 rwm", *(f"c {major}:* rwm" for major in range(136, 144))]


@pytest.fixture
def fake_gpu_nodes(tmp_path):
    """A /dev with GPU nodes that are really /dev/zero (1:5) and /dev/full (1:7)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name, minor in (("nvidia0", 5), ("nvidia1", 7), ("nvidiactl", 9)):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    return dev


@pytest.mark.root
@pytest.mark.ci_may_skip("the host's cgroup layout decides whether v1 devices is there")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups and device nodes")
def test_v1_device_filter_opens_only_the_cgroups_own_gpu(devices_driver, fake_gpu_nodes):
    """Two users, one GPU each: neither can open the other's, whatever CUDA_VISIBLE_DEVICES says."""
    dev = fake_gpu_nodes
    driver = CgroupV1(devices_driver.parent, standard_devices=("/dev/null",), dev=dev)
    gpu0, gpu1, ctl = dev / "nvidia0", dev / "nvidia1", dev / "nvidiactl"
    driver.create("alice", Limits(gpus=("0",)))
    driver.create("bob", Limits(gpus=("1",)))
    driver.create("carol", Limits())
    assert opened_in(driver, "alice", gpu0, gpu1, ctl) == {
        str(gpu0): "ok",
        str(gpu1): EPERM,
        str(ctl): "ok",
    }
    assert opened_in(driver, "bob", gpu0, gpu1, ctl) == {
        str(gpu0): EPERM,
        str(gpu1): "ok",
        str(ctl): "ok",
    }
    # no GPU: not even the driver's control node
    assert opened_in(driver, "carol", gpu0, gpu1, ctl) == {
        str(gpu0): EPERM,
        str(gpu1): EPERM,
        str(ctl): EPERM,
    }


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make device nodes")
def test_device_rules_name_each_node_by_number(fake_gpu_nodes):
    dev = fake_gpu_nodes
    pts = [f"c {major}:* rwm" for major in range(136, 144)]
    assert device_rules((), ("/dev/null", "/dev/no-such-node", "/etc/passwd"), dev) == [
        "c 1:3 rwm",
        *pts,
    ]
    # a GPU's own node and the control nodes that exist (no nvidia-uvm here)
    assert device_rules(("1",), ("/dev/null",), dev) == [
        "c 1:3 rwm",
        "c 1:7 rwm",
        "c 1:9 rwm",
        *pts,
    ]
    assert device_rule("/dev/zero") == "c 1:5 rwm"


def test_gpu_node_numbers_come_from_the_drivers_proc_files(tmp_path):
    """CUDA index 0 may be /dev/nvidia3: the driver's /proc files say which."""
    gpus = tmp_path / "driver" / "nvidia" / "gpus"
    for address, minor in (("0000:3b:00.0", 3), ("0000:af:00.0", 0)):
        (gpus / address).mkdir(parents=True)
        (gpus / address / "information").write_text(
            f"Model: \t\t NVIDIA H100\nIRQ:   \t\t 42\nDevice Minor: \t {minor}\n"
        )
    smi = "0, 00000000:3B:00.0\n1, 00000000:AF:00.0\n2, 00000000:D8:00.0\n"
    assert parse_minor_numbers(smi, tmp_path) == {"0": 3, "1": 0}


def test_v2_says_when_the_kernel_refuses_the_device_filter(tmp_path, caplog):
    """No BPF device program (here: a fake cgroup): the log says GPUs are not isolated, once."""
    root = fake_v2_root(tmp_path)
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").write_text("")  # a machine with the NVIDIA driver
    (root / "sy").mkdir()
    (root / "sy" / "cgroup.subtree_control").write_text("")
    driver = CgroupV2("sy", root, dev=dev)
    assert driver.filters_devices is True
    driver.create("alice", Limits(gpus=("0",)))
    driver.create("bob", Limits())
    assert driver.filters_devices is False
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "The cgroup2 driver cannot filter devices (bpf(2): Bad file descriptor): GPUs are "
        "assigned by CUDA_VISIBLE_DEVICES only, and a process that resets it can open every GPU."
    ]


def cgroup2_mount() -> Path | None:
    """The host's cgroup v2 hierarchy: the root (v2 hosts) or ``unified`` (hybrid hosts)."""
    for path in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (path / "cgroup.procs").exists() and (path / "cgroup.subtree_control").exists():
            return path
    return None


@pytest.fixture
def v2_cgroup():
    """An empty cgroup on the host's real cgroup v2 hierarchy, removed after the test."""
    mount = cgroup2_mount()
    if mount is None or not os.access(mount, os.W_OK):
        pytest.skip("no writable cgroup v2 hierarchy on this host")
    directory = mount / f"shipyard-unit-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    try:
        yield directory
    finally:
        for pid in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        for _ in range(100):
            try:
                directory.rmdir()
                break
            except OSError:
                time.sleep(0.02)


class InCgroup(CgroupDriver):
    """Only joins an existing cgroup directory: for testing what is attached to it."""

    kind = "test-join"

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    @classmethod
    def available(cls, root=CGROUP_ROOT) -> bool:
        return True

    def directories(self, name: str) -> list[Path]:
        return [self.directory]

    def _write_limits(self, name, limits) -> None:
        pass


@pytest.mark.root
@pytest.mark.ci_may_skip("the host's cgroup layout decides whether a v2 hierarchy is writable")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups and load BPF")
def test_v2_bpf_filter_allows_null_and_refuses_zero_for_real(v2_cgroup, fake_gpu_nodes):
    """The v2 device filter on the real kernel (on hybrid hosts, the unified hierarchy).

    Loading again replaces the program: a cgroup created again with another GPU
    is not left with the old one's rules.
    """
    dev = fake_gpu_nodes  # nvidia0 is 1:5 (/dev/zero), nvidia1 1:7, nvidiactl 1:9
    joined = InCgroup(v2_cgroup)
    bpfdev.attach(v2_cgroup, device_rules((), ("/dev/null",), dev))
    assert opened_in(joined, "x", "/dev/null", "/dev/zero", dev / "nvidia1", dev / "nvidiactl") == {
        "/dev/null": "ok",
        "/dev/zero": EPERM,
        str(dev / "nvidia1"): EPERM,
        str(dev / "nvidiactl"): EPERM,
    }
    bpfdev.attach(v2_cgroup, device_rules(("1",), ("/dev/null",), dev))
    assert opened_in(joined, "x", dev / "nvidia0", dev / "nvidia1", dev / "nvidiactl") == {
        str(dev / "nvidia0"): EPERM,
        str(dev / "nvidia1"): "ok",
        str(dev / "nvidiactl"): "ok",
    }


@pytest.mark.root
@pytest.mark.ci_may_skip("runs only where the host is cgroup v2 (this CI kind is v1)")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroups")
@pytest.mark.skipif(not CgroupV2.available(), reason="this host is not a cgroup v2 host")
def test_v2_driver_confines_a_process_for_real():
    """The v2 driver on a real v2 kernel: limits, the device filter, cleanup (#14, point 12).

    Placed as the hub would place it (under the delegated unit where systemd runs).
    """
    parent = f"shipyard-unit-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    driver = make_driver("cgroup2", parent)
    driver.standard_devices = ("/dev/null",)
    try:
        driver.create("alice", Limits(cpu_limit=0.5, mem_limit=256 * MiB))
        (directory,) = driver.directories("alice")
        assert (directory / "memory.max").read_text().strip() == str(256 * MiB)
        assert (directory / "cpu.max").read_text().split() == ["50000", "100000"]
        assert driver.filters_devices, "the kernel refused the BPF device program"
        assert opened_in(driver, "alice", "/dev/null", "/dev/zero") == {
            "/dev/null": "ok",
            "/dev/zero": EPERM,
        }
        proc = subprocess.Popen(["sleep", "60"], preexec_fn=driver.preexec("alice"))  # noqa: S603, S607
        try:
            where = "/" + "/".join(filter(None, [driver.base, parent, "alice"]))
            assert controller_paths(proc.pid)[""] == where
            described = describe_process(proc.pid)
            assert (described["kind"], described["mem_limit"], described["cpu_limit"]) == (
                "cgroup2",
                256 * MiB,
                0.5,
            )
            driver.remove("alice")
            assert proc.wait(timeout=5) == -9
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not driver.exists("alice")
        assert driver.remove_parent()
    finally:
        if driver.exists("alice"):
            driver.remove("alice")
        driver.remove_parent()


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_bpf_refused_without_privilege_is_a_device_filter_error():
    """Not privileged: an OSError the v2 driver turns into a warning, never a failed spawn.

    The retry with a higher RLIMIT_MEMLOCK (kernels before 5.11) must not turn
    the refusal into the ValueError of an unprivileged setrlimit.
    """
    code = (
        "from hub_ext.host import bpfdev\n"
        "try:\n"
        "    bpfdev.load(['c 1:3 rwm'])\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, e.errno)\n"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        preexec_fn=as_nobody,
        cwd="/",
        env={"PYTHONPATH": str(Path(bpfdev.__file__).parent.parent)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "DeviceFilterError 1\n", out.stderr


@pytest.mark.parametrize(
    "rule, parsed",
    [
        ("c 1:3 rwm", (bpfdev.BPF_DEVCG_DEV_CHAR, 1, 3)),
        ("c 136:* rwm", (bpfdev.BPF_DEVCG_DEV_CHAR, 136, None)),
        ("b 8:0 rwm", (bpfdev.BPF_DEVCG_DEV_BLOCK, 8, 0)),
        ("c *:* rwm", (bpfdev.BPF_DEVCG_DEV_CHAR, None, None)),
    ],
)
def test_bpf_rules_parse(rule, parsed):
    assert bpfdev.parse_rule(rule) == parsed


def test_bpf_program_is_one_block_per_rule():
    """Four loads, then per rule its checks plus "return 1", then "return 0"."""
    program = bpfdev.assemble(["c 1:3 rwm", "c 136:* rwm"])
    assert len(program) == 8 * (4 + (3 + 2) + (2 + 2) + 2)
    # the first rule's type check jumps over its major and minor checks and its return
    code, regs, off, imm = struct.unpack_from("<BBhi", program, 8 * 4)
    assert (code, regs, off, imm) == (0x55, 2, 4, bpfdev.BPF_DEVCG_DEV_CHAR)


# ------------------------------------------------------------ systemd (#14, point 10)


def fake_host(tmp_path: Path, init: str, run_systemd: bool, cgroup: str) -> tuple[Path, Path]:
    """Fake /proc and /run: PID 1's name, /run/systemd/system, and /proc/self/cgroup."""
    proc, run = tmp_path / "proc", tmp_path / "run"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "comm").write_text(init + "\n")
    (proc / "self").mkdir()
    (proc / "self" / "cgroup").write_text(cgroup)
    (run / "systemd" / ("system" if run_systemd else "journal")).mkdir(parents=True)
    return proc, run


V2_SERVICE = "0::/system.slice/shipyard.service/supervisor\n"
V1_SERVICE = (
    "12:devices:/system.slice/shipyard.service\n"
    "4:memory:/system.slice/shipyard.service\n"
    "3:cpu,cpuacct:/system.slice/shipyard.service\n"
    "1:name=systemd:/system.slice/shipyard.service\n"
    "0::/system.slice/shipyard.service\n"
)


@pytest.mark.parametrize(
    "init, run_systemd, expected",
    [
        ("systemd", True, True),
        # a container image that ships /run/systemd but runs something else as PID 1
        ("process_api", True, False),
        ("bash", False, False),
        # systemd as PID 1 that did not boot the machine (sd_booted() is false)
        ("systemd", False, False),
    ],
)
def test_systemd_is_detected_by_pid_1_and_run_dir(tmp_path, init, run_systemd, expected):
    proc, run = fake_host(tmp_path, init, run_systemd, V2_SERVICE)
    assert systemd_is_init(proc, run) is expected


def test_no_proc_is_no_systemd(tmp_path):
    assert systemd_is_init(tmp_path / "none", tmp_path / "none") is False


@pytest.mark.parametrize(
    "text, kind, unit",
    [
        (V2_SERVICE, "cgroup2", "system.slice/shipyard.service"),
        ("0::/system.slice/shipyard.service\n", "cgroup2", "system.slice/shipyard.service"),
        (V1_SERVICE, "cgroup1", "system.slice/shipyard.service"),
        # hybrid: the v1 memory line is what the v1 driver writes under
        (
            "4:memory:/system.slice/jupyterhub.service\n0::/system.slice/other.service\n",
            "cgroup1",
            "system.slice/jupyterhub.service",
        ),
        ("1:name=systemd:/system.slice/hub.service\n", "cgroup1", "system.slice/hub.service"),
        (
            "0::/user.slice/user-0.slice/session-4.scope\n",
            "cgroup2",
            "user.slice/user-0.slice/session-4.scope",
        ),
        ("0::/\n", "cgroup2", None),
        ("0::/user.slice\n", "cgroup2", None),
        ("4:memory:/\n", "cgroup1", None),
    ],
)
def test_unit_cgroup_is_the_nearest_service_or_scope(text, kind, unit):
    assert unit_cgroup(text, kind) == unit


def test_without_systemd_cgroups_stay_at_the_root(tmp_path):
    """Containers and CI: today's layout, <root>/<parent>/<name>."""
    proc, run = fake_host(tmp_path, "process_api", True, V2_SERVICE)
    root = fake_v2_root(tmp_path)
    driver = make_driver("auto", "sy", root, proc, run)
    assert (type(driver), driver.base) == (CgroupV2, "")
    assert driver.directories("alice") == [root / "sy" / "alice"]


def test_under_systemd_v2_cgroups_go_under_the_delegated_service(tmp_path):
    proc, run = fake_host(tmp_path, "systemd", True, V2_SERVICE)
    root = fake_v2_root(tmp_path)
    unit = root / "system.slice" / "shipyard.service"
    unit.mkdir(parents=True)
    (unit / "cgroup.subtree_control").write_text("")
    (root / "system.slice" / "cgroup.subtree_control").write_text("cpu memory pids\n")
    driver = make_driver("cgroup2", "sy", root, proc, run)
    assert driver.base == "system.slice/shipyard.service"
    assert driver.directories("alice") == [unit / "sy" / "alice"]
    (unit / "sy").mkdir()
    (unit / "sy" / "cgroup.subtree_control").write_text("")
    driver.create("alice", Limits(mem_limit=GiB))
    assert (unit / "sy" / "alice" / "memory.max").read_text() == str(GiB)
    # controllers enabled from the unit's cgroup down; systemd's own tree untouched
    assert read(unit / "cgroup.subtree_control") == "+memory +cpu"
    assert read(unit / "sy" / "cgroup.subtree_control") == "+memory +cpu"
    assert read(root / "cgroup.subtree_control") == ""
    assert read(root / "system.slice" / "cgroup.subtree_control") == "cpu memory pids\n"
    assert not (root / "sy").exists()


def test_under_systemd_v1_cgroups_go_under_the_service_in_each_hierarchy(tmp_path):
    proc, run = fake_host(tmp_path, "systemd", True, V1_SERVICE)
    root = tmp_path / "cgroup"
    for hierarchy in ("memory", "cpu"):
        (root / hierarchy).mkdir(parents=True)
        (root / hierarchy / "cgroup.procs").write_text("")
    driver = make_driver("auto", "sy", root, proc, run)
    assert (type(driver), driver.base) == (CgroupV1, "system.slice/shipyard.service")
    assert driver.directories("alice") == [
        root / h / "system.slice" / "shipyard.service" / "sy" / "alice" for h in ("memory", "cpu")
    ]


def test_rlimit_fallback_needs_no_place(tmp_path):
    proc, run = fake_host(tmp_path, "systemd", True, "0::/\n")
    driver = make_driver("rlimit", "sy", tmp_path / "cgroup", proc, run)
    assert (type(driver), driver.base) == (RlimitFallback, "")


def test_under_systemd_outside_any_unit_is_refused(tmp_path):
    proc, run = fake_host(tmp_path, "systemd", True, "0::/\n")
    with pytest.raises(CgroupPlacementError) as e:
        systemd_base("cgroup2", proc, run, delegates=lambda unit: True)
    assert str(e.value) == (
        "systemd manages this machine's cgroups but Shipyard runs in no unit of its own: "
        "run it as a service with Delegate=yes (docs/profiles.md)."
    )


def test_a_unit_without_delegate_is_used_with_a_warning(tmp_path, caplog):
    proc, run = fake_host(tmp_path, "systemd", True, V2_SERVICE)
    asked = []
    base = systemd_base("cgroup2", proc, run, delegates=lambda unit: asked.append(unit) or False)
    assert (base, asked) == ("system.slice/shipyard.service", ["shipyard.service"])
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "Shipyard's cgroups go under system.slice/shipyard.service, whose unit has no "
        "Delegate=yes: systemd may move or reset them. Run Shipyard as a service with "
        "Delegate=yes (docs/profiles.md)."
    ]
    caplog.clear()
    assert systemd_base("cgroup2", proc, run, delegates=lambda unit: True) == base
    assert not caplog.records
