"""The report of scripts/gpu_check.sh: WORK/gpu.md and WORK/gpu.json from what its steps left in WORK.

    python scripts/gpu_report.py WORK LABEL

gpu_check.sh runs this after every step, so a run cut short (a step over its limit, the device call over
its timeout) still brings back a report of everything done until then. It reads:
- WORK/env.json (the detect step's JSON line) and WORK/logs/detect.log (nvidia-smi's line first);
- WORK/logs/steps.txt: one line per step, "NAME rc=RC SECONDSs", or "NAME skipped: ...";
- WORK/pytest_*.xml (JUnit XML of each pytest step); where a step left no XML (killed before pytest wrote
  it), the test outcomes are read from that step's verbose log (WORK/logs/pytest_*.log) instead;
- WORK/mmd.json + .md and WORK/finetune.json + .md, the benchmarks' results (partial ones too).
Standard library only: it must run on any Python the GPU image has.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

# pytest -v: "tests/gpu/test_x.py::test_y[a-b] PASSED [ 12%]"
_VERBOSE = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_TIMEOUT_RCS = {"124", "137"}


def _tests_from_xml(path: Path, tests: dict) -> None:
    for case in ET.parse(path).iter("testcase"):
        if case.get("name") is None:  # the test running when pytest was interrupted (a nameless entry)
            continue
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            tests["skipped"] += 1
            tests["skips"].append(f"{name}: {case.find('skipped').get('message')}")
        elif case.find("failure") is not None or case.find("error") is not None:
            tests["failed"] += 1
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            tests["failures"].append(f"{name}: {(bad.get('message') or '').splitlines()[0][:300]}")
        else:
            tests["passed"] += 1


def _tests_from_log(path: Path, tests: dict) -> None:
    for line in path.read_text(errors="replace").splitlines():
        m = _VERBOSE.match(line.strip())
        if not m:
            continue
        name, outcome = m.groups()
        if outcome == "SKIPPED":
            tests["skipped"] += 1
            tests["skips"].append(f"{name}: (reason in the log)")
        elif outcome in ("FAILED", "ERROR"):
            tests["failed"] += 1
            tests["failures"].append(name)
        else:
            tests["passed"] += 1


def collect_tests(work: Path) -> dict:
    """Outcomes of every pytest step: from its XML, else from its verbose log (noted in `from_logs`)."""
    tests = {"passed": 0, "failed": 0, "skipped": 0, "skips": [], "failures": [], "from_logs": []}
    logs = work / "logs"
    names = sorted({p.stem for p in work.glob("pytest_*.xml")} | {p.stem for p in logs.glob("pytest_*.log")})
    for name in names:
        xml, log = work / f"{name}.xml", logs / f"{name}.log"
        if xml.is_file() and xml.stat().st_size:
            _tests_from_xml(xml, tests)
        elif log.is_file():
            _tests_from_log(log, tests)
            tests["from_logs"].append(name)
    return tests


def _steps(work: Path) -> list[str]:
    path = work / "logs" / "steps.txt"
    return [s for s in path.read_text().splitlines() if s.strip()] if path.is_file() else []


def _failed_steps(steps: list[str]) -> list[str]:
    out = []
    for s in steps:
        name, _, rest = s.partition(" ")
        rc = rest.split("rc=")[1].split()[0] if "rc=" in rest else None
        if rest.startswith("skipped"):
            out.append(f"{name} (skipped: {rest.partition(': ')[2]})")
        elif rc in _TIMEOUT_RCS:
            out.append(f"{name} (timed out)")
        elif rc not in (None, "0"):
            out.append(f"{name} (rc {rc})")
    return out


def build(work: Path, label: str) -> tuple[dict, list[str]]:
    env_file = work / "env.json"
    try:
        env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    except json.JSONDecodeError:
        env = {}
    detect = work / "logs" / "detect.log"
    smi = detect.read_text().splitlines()[0] if detect.is_file() and detect.read_text().strip() else "?"
    steps = _steps(work)
    failed = _failed_steps(steps)
    tests = collect_tests(work)
    result = {
        "label": label,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nvidia_smi": smi,
        "environment": env,
        "steps": steps,
        "failed_steps": failed,
        "tests_gpu": tests,
    }
    head = f"# GPU validation ({label}{': ' + env['device'] if env.get('device') else ''})"
    md = [
        head,
        "",
        f"Written {result['written_at']} by scripts/gpu_check.sh."
        + (
            " A CPU dry run: Triton interpreted, tiny sizes; the figures prove the flow, they measure nothing."
            if label != "GPU"
            else ""
        ),
        "",
        "How to run it on a GPU (the one device-tool call, what it carries, its timeout, what to do on a "
        'timeout): the header of scripts/gpu_check.sh, "THE DEVICE CALL".',
        "",
        f"- nvidia-smi: {smi}",
        f"- Python {env.get('python')}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}); triton "
        f"{env.get('triton')}; lightning {env.get('lightning')}; transformers {env.get('transformers')}; "
        f"onnxruntime {env.get('onnxruntime')} (providers {env.get('ort_providers')}); TensorRT "
        f"{env.get('tensorrt')}",
        f"- steps: {'; '.join(steps)}" + (f" -- NOT OK: {', '.join(failed)}" if failed else ""),
        "",
        f"## tests/gpu: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped",
        "",
        *(
            [f"- outcomes read from the log of {', '.join(tests['from_logs'])} (the step left no XML)"]
            if tests["from_logs"]
            else []
        ),
        *[f"- failed: {f}" for f in tests["failures"]],
        *[f"- skipped: {s}" for s in sorted(set(tests["skips"]))],
        "",
    ]
    for name in ("mmd", "finetune"):
        js, mdf = work / f"{name}.json", work / f"{name}.md"
        if js.is_file() and mdf.is_file():
            result[name] = json.loads(js.read_text())
            md += [
                line.replace("# ", "## ", 1) if line.startswith("# ") else line
                for line in mdf.read_text().splitlines()
            ]
            md.append("")
        else:
            md += [f"## {name}: no result yet (see the step's log)", ""]
    return result, md


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gpu_report.py WORK LABEL", file=sys.stderr)
        return 2
    work, label = Path(argv[0]), argv[1]
    result, md = build(work, label)
    for path, text in (
        (work / "gpu.json", json.dumps(result, indent=2) + "\n"),
        (work / "gpu.md", "\n".join(md) + "\n"),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
