"""Loads a leakgate report for the CI scripts: a report directory (its report.jsonl, the
lines a run appends, else its report.json), a report.jsonl or a report.json, of format
version 1 or 2. A line cut short by a killed writer is skipped; a later line for a
scenario replaces an earlier one, as leakgate's own reader does."""
import json
import os
import sys


def load(path):
    if os.path.isdir(path):
        lines = os.path.join(path, "report.jsonl")
        path = lines if os.path.exists(lines) else os.path.join(path, "report.json")
    try:
        with open(path) as f:
            if not path.endswith(".jsonl"):
                report = json.load(f)
                check_version(path, report)
                return report
            header, *rest = f.read().splitlines()
        report = json.loads(header)
    except (OSError, ValueError) as error:
        sys.exit(f"cannot read leakgate report {path}: {error}")
    check_version(path, report)
    scenarios = {}
    for number, line in enumerate(rest, start=2):
        if not line.strip():
            continue
        try:
            scenario = json.loads(line)
        except json.JSONDecodeError as error:
            if cut_short(line, error):
                continue
            sys.exit(f"{path}:{number}: not a scenario report: {error}")
        scenarios[scenario["name"]] = scenario
    report["scenarios"] = list(scenarios.values())
    return report


def cut_short(line, error):
    """Whether a line that does not parse ended mid-value (a writer killed mid-line), as
    opposed to holding something that is not JSON: the text ran out inside a string, or
    the parser wanted more at the very end."""
    return error.msg.startswith("Unterminated string") or error.pos >= len(line.rstrip()) - 1


def check_version(path, report):
    if report.get("format_version") not in (1, 2):
        sys.exit(f"{path}: report format version {report.get('format_version')}, expected 1 or 2")
