"""Landlock facts for the test guest (tests/vm/run-cgroup2), printed as `key: value` lines.

abi: the Landlock ABI version (0: unavailable). path-rules: whether a path rule matches on the
guest's root filesystem (9p): a ruleset that handles file and directory reads and allows them
beneath /usr only must let /usr/lib/os-release be read and deny /etc/passwd. On 9p without a
cache every lookup makes a new inode, the rule for /usr never matches, and both reads fail.
Uses raw syscalls through ctypes (Python's standard library has no Landlock binding).
"""

import ctypes
import os
import struct
import sys

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
READ_FILE, READ_DIR = 1 << 2, 1 << 3
PR_SET_NO_NEW_PRIVS = 38

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(*args):
    r = libc.syscall(*args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def abi():
    try:
        return syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError:
        return 0


def can_read(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def path_rules():
    """In a child: restrict to reads beneath /usr, then try a file inside and one outside."""
    pid = os.fork()
    if pid == 0:
        try:
            attr = ctypes.create_string_buffer(struct.pack("=Q", READ_FILE | READ_DIR))
            ruleset = syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(8), ctypes.c_uint32(0))
            usr = os.open("/usr", os.O_PATH | os.O_CLOEXEC)
            rule = ctypes.create_string_buffer(struct.pack("=Qi", READ_FILE | READ_DIR, usr))
            syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH), rule, ctypes.c_uint32(0))
            if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
            inside, outside = can_read("/usr/lib/os-release"), can_read("/etc/passwd")
            os._exit(0 if inside and not outside else 1 + (not inside) + 2 * outside)
        except Exception as e:  # noqa: BLE001 - report anything as a failed check
            print(f"landlock error: {e}", file=sys.stderr)
            os._exit(9)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {0: "work (/usr/lib/os-release readable, /etc/passwd denied)",
            2: "BROKEN (both denied: the rule for /usr does not match)",
            3: "BROKEN (/etc/passwd readable: not enforced)",
            4: "BROKEN (/usr denied, /etc allowed)"}.get(code, f"error {code}")


if __name__ == "__main__":
    v = abi()
    print(f"landlock abi: {v}")
    if v > 0:
        print(f"landlock path rules on /: {path_rules()}")
