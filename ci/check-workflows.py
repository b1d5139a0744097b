#!/usr/bin/env python3
"""Checks the workflow templates in ci/github: each parses as YAML and is a GitHub
Actions workflow (`on` and `jobs`, each job with `runs-on` and `steps`), every step has
`run` or `uses`, and every repository script or path a `run` step calls exists
(`ci/...`, `.ci/...`), as do the cargo packages it names. No step calls apt-get: the
scripts decide whether they need sudo.

    python3 ci/check-workflows.py        # exit 1 naming each problem
"""
import os
import re
import sys

try:
    import yaml
except ImportError:  # PyPI's PyYAML; installed on demand so a fresh machine can run this
    import subprocess
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "pyyaml"])
    import yaml

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []
packages = set()
for member in ("cli", "harness", "reports", "scenarios", "harness/bench"):
    with open(os.path.join(root, member, "Cargo.toml")) as f:
        packages.update(re.findall(r'^name = "([^"]+)"', f.read(), re.M)[:1])

workflows = sorted(f for f in os.listdir(os.path.join(root, "ci", "github")) if f.endswith(".yml"))
if not workflows:
    problems.append("ci/github holds no workflow")
for name in workflows:
    path = os.path.join("ci", "github", name)
    try:
        with open(os.path.join(root, path)) as f:
            flow = yaml.safe_load(f)
    except yaml.YAMLError as error:
        problems.append(f"{path}: not YAML: {error}")
        continue
    # YAML 1.1 reads the key `on` as the boolean true.
    if not isinstance(flow, dict) or not (("on" in flow or True in flow) and "jobs" in flow):
        problems.append(f"{path}: not a workflow (needs `on` and `jobs`)")
        continue
    for job_name, job in flow["jobs"].items():
        if "runs-on" not in job or not job.get("steps"):
            problems.append(f"{path}: job {job_name} needs runs-on and steps")
            continue
        for number, step in enumerate(job["steps"], start=1):
            where = f"{path}: job {job_name}, step {number} ({step.get('name', '-')})"
            if ("run" in step) == ("uses" in step):
                problems.append(f"{where}: needs exactly one of run, uses")
            script = step.get("run", "")
            for called in re.findall(r"(?<![\w/.-])(\.?ci/[\w./-]+)", script):
                if not os.path.exists(os.path.join(root, called)):
                    problems.append(f"{where}: calls {called}, which does not exist")
            for package in re.findall(r"cargo [^\n]*?-p ([\w-]+)", script):
                if package not in packages:
                    problems.append(f"{where}: names package {package}, which is not in the workspace")
            # Root or not is the scripts' call (sudo only when not root and it exists).
            if re.search(r"(^|\s)apt-get ", script):
                problems.append(f"{where}: calls apt-get; leave installing to a ci/ script")

for problem in problems:
    print(f"FAIL: {problem}")
if problems:
    sys.exit(1)
print(f"workflows: {len(workflows)} parse, and every script and package they call exists")
