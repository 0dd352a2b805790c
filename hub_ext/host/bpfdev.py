"""A cgroup v2 device filter: a tiny BPF program, loaded and attached with bpf(2).

cgroup v2 has no ``devices.allow``; the kernel asks a program of type
``BPF_PROG_TYPE_CGROUP_DEVICE`` attached to the cgroup (or an ancestor) at
every open or mknod of a device node, and refuses unless it returns 1. This
is how runc, crun and systemd (``DeviceAllow=``) filter devices on v2.

The program is a straight list of comparisons, one per allowed rule
(:func:`assemble`): type, then major, then minor (each skipped for ``*``),
return 1 on a match, 0 at the end. Every rule allows all accesses (``rwm``),
so the access bits are never read.

Written against the kernel's ABI with ctypes rather than a library:
libbpf's Python bindings need a compiler and kernel headers at install time,
and bcc ships a whole LLVM; what is needed here is two system calls and 8
bytes per instruction, all of them named below after the kernel's
``include/uapi/linux/bpf.h``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import resource
import struct
from pathlib import Path

#: bpf(2)'s number per machine (asm/unistd.h)
_SYSCALL = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}

# commands, program and attach types, flags (uapi/linux/bpf.h)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
#: another program attached to the cgroup with the same flags is replaced
BPF_F_NONE = 0
# bpf_cgroup_dev_ctx: u32 access_type (access << 16 | type), u32 major, u32 minor
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2

# instruction classes and operations (uapi/linux/bpf_common.h, bpf.h)
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_EXIT = 0x95  # BPF_JMP | BPF_EXIT

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class DeviceFilterError(OSError):
    """The kernel would not load or attach the program (no CONFIG_CGROUP_BPF, no privilege)."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: opcode, registers (src high nibble), offset, immediate."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def parse_rule(rule: str) -> tuple[int, int | None, int | None]:
    """``"c 136:* rwm"`` as (BPF_DEVCG_DEV_CHAR, 136, None); ``*`` is any number."""
    kind, numbers, _access = rule.split()
    major, minor = numbers.split(":")
    dev_type = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}[kind]
    return (
        dev_type,
        None if major == "*" else int(major),
        None if minor == "*" else int(minor),
    )


def assemble(rules: list[str]) -> bytes:
    """The program that allows exactly ``rules`` (devices-controller syntax, all ``rwm``).

    Registers: r1 the context, r2 the device type, r4 the major, r5 the minor.
    """
    code = [
        _insn(_LDX_MEM_W, dst=2, src=1, off=0),  # r2 = ctx->access_type
        _insn(_ALU32_AND_K, dst=2, imm=0xFFFF),  # r2 &= 0xffff: the type
        _insn(_LDX_MEM_W, dst=4, src=1, off=4),  # r4 = ctx->major
        _insn(_LDX_MEM_W, dst=5, src=1, off=8),  # r5 = ctx->minor
    ]
    for rule in rules:
        dev_type, major, minor = parse_rule(rule)
        checks = [(2, dev_type)]
        if major is not None:
            checks.append((4, major))
        if minor is not None:
            checks.append((5, minor))
        # each failed check jumps past the rest of this rule and its "return 1"
        for i, (reg, value) in enumerate(checks):
            left = len(checks) - i - 1
            code.append(_insn(_JNE_K, dst=reg, off=left + 2, imm=value))
        code += [_insn(_MOV64_K, dst=0, imm=1), _insn(_EXIT)]
    code += [_insn(_MOV64_K, dst=0, imm=0), _insn(_EXIT)]
    return b"".join(code)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    number = _SYSCALL.get(platform.machine())
    if number is None:
        raise DeviceFilterError(errno.ENOSYS, f"bpf(2) not known on {platform.machine()}")
    result = _libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        raise DeviceFilterError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def _load_attr(program: bytes, log: ctypes.Array | None) -> tuple[ctypes.Array, list]:
    """``union bpf_attr`` for BPF_PROG_LOAD, and the buffers it points at (keep them alive)."""
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    attr = ctypes.create_string_buffer(128)  # zeroed beyond what is set, as the kernel wants
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(program) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1 if log is not None else 0,  # log_level
        ctypes.sizeof(log) if log is not None else 0,
        ctypes.addressof(log) if log is not None else 0,
    )
    return attr, [insns, license_, log]


def load(rules: list[str]) -> int:
    """Load the program for ``rules``; its file descriptor (the caller closes it)."""
    program = assemble(rules)
    attr, _keep = _load_attr(program, None)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except DeviceFilterError as e:
        if e.errno in (errno.EACCES, errno.EINVAL):  # the verifier refused: load again to say why
            log = ctypes.create_string_buffer(1 << 20)
            attr, _keep = _load_attr(program, log)
            with contextlib.suppress(DeviceFilterError):
                _bpf(BPF_PROG_LOAD, attr)
            raise DeviceFilterError(e.errno, f"{e.strerror}: {log.value.decode()[-500:]}") from None
        if e.errno != errno.EPERM:
            raise
        # kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK, often 64 KiB
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft == resource.RLIM_INFINITY:
            raise
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)
        except (ValueError, OSError):  # not privileged: the first refusal says it
            raise e from None
        return _bpf(BPF_PROG_LOAD, attr)


def attach(directory: Path, rules: list[str]) -> None:
    """Allow only ``rules`` to every process in the cgroup v2 ``directory`` and below.

    A program attached before (a cgroup created again) is replaced; the
    attachment holds the program, so nothing needs to stay open.

    Raises
    ------
    DeviceFilterError
        The kernel refused (the message says why).
    """
    prog = load(rules)
    try:
        cgroup = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            attr = ctypes.create_string_buffer(32)
            struct.pack_into("<IIII", attr, 0, cgroup, prog, BPF_CGROUP_DEVICE, BPF_F_NONE)
            _bpf(BPF_PROG_ATTACH, attr)
        finally:
            os.close(cgroup)
    finally:
        os.close(prog)
