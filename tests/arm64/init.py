#!/usr/bin/python3.11 -IS
"""/init of the arm64 test machine: run the probe on each plan of /plans.json, print, power off.

With /records.json in the initramfs, each of its plans then runs again as a command under
``gpa-plan record`` (``record_command`` of gpa_plan.record.session: the probe as
``python3.11 -S -m probe PLAN``, or, for an entry naming a ``program``, that program of
/programs with the entry as its argument), and the output holds, per entry, what the tracer
reported, the layout of every VM the command made, and the command's own JSON output.

The output is one JSON document, base64-encoded in prefixed lines between BEGIN and END
markers (a kernel message printed meanwhile lands between two lines and is skipped): each
plan's results, or the error that stopped that plan, and the machine's facts (kernel release,
the KVM lines of the kernel log, seconds since boot when the init started and when the plans
were done). A failure outside the plans prints its traceback between the ERROR markers
instead. Either way the machine powers off, so QEMU exits.
"""

import base64
import ctypes
import json
import os
import sys
import traceback

BEGIN = "=== gpa-plan arm64 results begin ==="
LINE = "gpa-plan-results:"
END = "=== gpa-plan arm64 results end ==="
ERROR_BEGIN = "=== gpa-plan arm64 init failed ==="
ERROR_END = "=== gpa-plan arm64 init failure end ==="

LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
SYSLOG_ACTION_READ_ALL = 3

libc = ctypes.CDLL(None, use_errno=True)


def uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as f:
        return float(f.read().split()[0])


def mount(source: str, target: str, fstype: str) -> None:
    os.makedirs(target, exist_ok=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        code = ctypes.get_errno()
        print(f"init: mount {fstype} on {target}: {os.strerror(code)}", flush=True)


def kernel_log_lines(*words: str) -> list[str]:
    size = 1 << 20
    buf = ctypes.create_string_buffer(size)
    n = libc.klogctl(SYSLOG_ACTION_READ_ALL, buf, size)
    text = buf.raw[: max(n, 0)].decode(errors="replace")
    return [line for line in text.splitlines() if any(word in line for word in words)]


def emit(payload: object) -> None:
    # Kernel messages at the console level would split the payload: keep them off from here.
    with open("/proc/sys/kernel/printk", "w", encoding="ascii") as f:
        f.write("1")
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    out = [BEGIN] + [LINE + data[i : i + 96] for i in range(0, len(data), 96)] + [END]
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


def main() -> None:
    mount("proc", "/proc", "proc")
    started = uptime()
    mount("sysfs", "/sys", "sysfs")
    mount("devtmpfs", "/dev", "devtmpfs")
    if not os.path.exists("/dev/kvm"):
        os.mknod("/dev/kvm", 0o600 | 0o020000, os.makedev(10, 232))
    sys.path.insert(0, "/")
    from probe.run import run_plan

    with open("/plans.json", encoding="utf-8") as f:
        plans = json.load(f)
    results = []
    for plan in plans:
        try:
            results.append(run_plan(plan))
        except Exception as exc:  # one plan's failure leaves the others' results
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            results.append({"format": 1, "steps": [], "probes": [], "error": error})
    plans_done = uptime()
    recordings = record_all() if os.path.exists("/records.json") else None
    machine = {
        "release": os.uname().release,
        "kvm_log": kernel_log_lines("kvm", "Run /init", "Freeing unused kernel"),
        "init_started": started,
        "plans_done": plans_done,
    }
    payload = {"machine": machine, "results": results}
    if recordings is not None:
        payload["recordings"] = recordings
        machine["records_done"] = uptime()
    emit(payload)


def record_all() -> list[dict[str, object]]:
    """Each plan of /records.json run by the probe under the recorder, in order."""
    from gpa_plan.record.session import record_command

    with open("/records.json", encoding="utf-8") as f:
        plans = json.load(f)
    os.chdir("/")  # where ``-m probe`` finds the probe
    os.environ["PYTHONPATH"] = "/"  # and where /programs find it
    out = []
    for index, plan in enumerate(plans):
        path, output = f"/tmp/record-{index}.json", f"/tmp/record-{index}.out"
        with open(path, "w", encoding="utf-8") as f:
            json.dump(plan, f)
        entry: dict[str, object] = {"error": None}
        try:
            with stdout_to(output):
                recording = record_command(command_of(plan, path))
            trace = recording.trace
            entry.update(
                status=trace.status,
                filtered=trace.filtered,
                stops=trace.stops,
                interrupted=trace.interrupted,
                arch=recording.arch,
                layouts=[layout.document for layout in recording.layouts],
                comments=[list(layout.comments) for layout in recording.layouts],
            )
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        with open(output, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            entry["results"] = json.loads(text)
        except ValueError:
            entry["results"] = None
            entry["output"] = text[-2000:]
        out.append(entry)
    return out


def command_of(entry: dict, path: str) -> list[str]:
    """The probe running the plan at ``path``, or the program in /programs the entry names."""
    if "program" in entry:
        return [sys.executable, "-S", f"/programs/{entry['program']}", path]
    return [sys.executable, "-S", "-m", "probe", path]


class stdout_to:
    """Standard output (file descriptor 1, which the command inherits) into a file, for a while."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.saved = -1

    def __enter__(self) -> None:
        sys.stdout.flush()
        self.saved = os.dup(1)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.close(fd)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, 1)
        os.close(self.saved)


def power_off() -> None:
    sys.stdout.flush()
    libc.sync()
    libc.reboot(LINUX_REBOOT_CMD_POWER_OFF)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        print(ERROR_BEGIN, traceback.format_exc(), ERROR_END, sep="\n", flush=True)
    power_off()
