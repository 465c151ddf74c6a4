"""Read a pytest run's output (stdin); print the node ids of tests whose xdist worker crashed, one per line.

Exit 0 only when the run failed through worker crashes alone: as many "worker 'gwN' crashed while running
'<node id>'" reports (xdist's, in full in the FAILURES section) as the final line counts failures and errors;
exit 1 when anything else failed or nothing crashed (the run's own failure stands). ``scripts/test.sh`` then reruns the crashed tests in a fresh process.

Why: jaxlib's CPU executables register their unwind tables with libgcc; in a worker that has compiled and
freed thousands of them, the unwinder has been seen to fault on a later C++ exception (SIGSEGV in
libgcc_s.so.1, which jaxlib throws internally all the time), killing whatever test runs then. The same test
passes alone and in a replay of the worker's whole sequence in one process.
"""

from __future__ import annotations

import re
import sys

CRASH = re.compile(r"^worker '[^']+' crashed while running '(.+)'$")
COUNT = re.compile(r"(\d+) (failed|errors?)\b")


def main() -> int:
    crashed, failures = [], 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        match = CRASH.match(line)
        if match is not None:
            crashed.append(match.group(1))
        elif line.startswith("=") or (line and line[0].isdigit()):  # the final counts: "1 failed, 9 passed in 3s"
            counted = COUNT.findall(line)
            if counted and (" passed" in line or " in " in line):
                failures = sum(int(n) for n, _ in counted)
    if not crashed or failures != len(crashed):
        return 1
    print("\n".join(crashed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
