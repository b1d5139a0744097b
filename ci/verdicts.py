#!/usr/bin/env python3
"""Prints one line per scenario of a leakgate report (a report directory, report.jsonl or
report.json): name, verdict, the resources of its findings, the crash cause. Two runs
agree when these lines are the same.

    python3 ci/verdicts.py REPORT            # the lines
    python3 ci/verdicts.py REPORT OTHER      # exit 1, with a diff, if they differ

OTHER may hold a subset of REPORT's scenarios (a gate run next to a whole-workspace
run): the scenarios of OTHER are compared, and each must be in REPORT.
"""
import difflib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from leakgate_report import load  # noqa: E402


def lines(path, names=None):
    report = load(path)
    out = []
    for s in sorted(report["scenarios"], key=lambda s: s["name"]):
        if names is not None and s["name"] not in names:
            continue
        findings = ",".join(sorted(f["resource"] for f in s["findings"])) or "-"
        crash = (s.get("crash") or {}).get("cause", "-")
        out.append(f"{s['name']} {s['verdict']} findings={findings} crash={crash}")
    return out


def main(args):
    if len(args) == 1:
        print("\n".join(lines(args[0])))
        return 0
    if len(args) != 2:
        sys.exit(__doc__)
    b = lines(args[1])
    names = {line.split(" ", 1)[0] for line in b}
    a = lines(args[0], names)
    if not b:
        print(f"verdicts: {args[1]} holds no scenario")
        return 1
    if a == b:
        print(f"verdicts agree: {len(a)} scenarios ({args[0]} and {args[1]})")
        return 0
    sys.stdout.writelines(difflib.unified_diff(
        [l + "\n" for l in a], [l + "\n" for l in b], args[0], args[1]))
    print(f"verdicts differ between {args[0]} and {args[1]}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
