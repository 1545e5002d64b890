"""Run every benchmark with its baseline and write the figures into docs/PERFORMANCE.md.

Each benchmark measures its own baseline in the same run and prints the ratio, with the
machine and the date. The full set takes about 20 minutes on 2 cores (most of it seeding
10 million scans for the report); --quick seeds 1 million instead.

Run: python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M scans for the report")
    args = parser.parse_args()
    runs = [
        ["scan_ingest.py", "--write"],
        ["bridge_ingest.py", "--events", "100000", "--write"],
        ["patrol_report.py", "--scans", "1000000" if args.quick else "10000000", "--write"],
    ]
    failed = []
    for argv in runs:
        print(f"== {' '.join(argv)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], cwd=HERE).returncode:
            failed.append(argv[0])
    print("figures written to docs/PERFORMANCE.md")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
