"""Is a pid still the job the studio started? (A pid can be reused by a later process.)"""
from __future__ import annotations

import subprocess
from pathlib import Path


def is_same_process(pid, start_token: str | None, folder: Path | None) -> bool:
    """Is ``pid`` alive and still the process that had ``start_token`` (and, for a studio
    job, its run folder on its command line)? A pid can be reused by a later process."""
    facts = process_facts(pid)
    if facts is None or (start_token is not None and facts[0] != start_token):
        return False
    return folder is None or str(folder) in facts[1]


def process_facts(pid) -> tuple[str, str] | None:
    """(start token, command line) of a live process; None if there is none or it is a zombie.
    The start token is its start time: from /proc on Linux, from ``ps`` elsewhere."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            return None
        state, *fields = stat[stat.rindex(")") + 2:].split()
        return None if state in ("Z", "X") else (fields[18], cmdline)   # field 22: starttime
    ps = subprocess.run(["ps", "-o", "stat=,lstart=,command=", "-p", str(pid)],
                        capture_output=True, text=True)
    parts = ps.stdout.split(None, 6)
    if ps.returncode != 0 or len(parts) < 7 or parts[0].startswith("Z"):
        return None
    return " ".join(parts[1:6]), parts[6]
