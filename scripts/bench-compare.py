#!/usr/bin/env python3
"""Before and after, row by row: two bench JSON files of the same kind, either rlhf_cuda_bench's
(--json: a list of rows) or `rlhf bench`'s (--json: an object with "rows"). Rows are matched by
op, shape, backend and (CUDA) algorithm; each line gives both medians, after/before, and each
one's share of the bandwidth its file measured. Rows in one file only are listed after.

Usage: bench-compare.py BEFORE.json AFTER.json [--min-change PCT]
  --min-change  list only the rows whose median moved by at least PCT percent
"""
import argparse
import json
import signal
import sys


def rows_of(path):
    with open(path) as f:
        data = json.load(f)
    rows = data["rows"] if isinstance(data, dict) else data
    out = {}
    for r in rows:
        key = (r["op"], r["shape"], r.get("backend", ""), r.get("algorithm", ""))
        share = r.get("pctOfMeasured", r.get("pctOfBandwidth"))
        out[key] = (r["medianUs"], share)
    return out


def share_text(share):
    return "" if share is None else f"{share:6.1f}%"


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--min-change", type=float, default=0.0)
    args = parser.parse_args()
    before, after = rows_of(args.before), rows_of(args.after)

    print(f"{'op':26} {'shape':24} {'backend':7} {'algorithm':10} {'before us':>11} {'after us':>11} "
          f"{'after/before':>12} {'before %':>8} {'after %':>8}")
    for key in before:
        if key not in after:
            continue
        (b_us, b_share), (a_us, a_share) = before[key], after[key]
        ratio = a_us / b_us if b_us > 0 else float("nan")
        if abs(ratio - 1) * 100 < args.min_change:
            continue
        op, shape, backend, algorithm = key
        print(f"{op:26} {shape:24} {backend:7} {algorithm:10} {b_us:11.2f} {a_us:11.2f} {ratio:12.3f} "
              f"{share_text(b_share):>8} {share_text(a_share):>8}")
    only_before = [k for k in before if k not in after]
    only_after = [k for k in after if k not in before]
    for label, keys in (("only before", only_before), ("only after", only_after)):
        for op, shape, backend, algorithm in keys:
            print(f"{label}: {op} {shape} {backend} {algorithm}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
