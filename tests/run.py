"""`make test`: lint, then the whole pytest suite; 'no tests collected' is a failure.

Usage: python -m tests.run [pytest arguments]
"""

import subprocess
import sys


def main(argv: list[str]) -> int:
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "hub_ext", "server_ext", "tests", "bench", "config"]
    )
    if lint.returncode:
        print("ruff found problems (above); `ruff check --fix` mends most.", file=sys.stderr)
        return lint.returncode
    code = subprocess.run([sys.executable, "-m", "pytest", *argv]).returncode
    if code == 5:  # pytest's "no tests were collected"
        print("pytest collected no tests: refusing to pass an empty run.", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
