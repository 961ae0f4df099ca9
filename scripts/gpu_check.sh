#!/usr/bin/env bash
# GPU validation kit: one command that makes a bare GPU image ready for refit, runs tests/gpu and the GPU
# benchmarks, and writes scripts/results/gpu.md (+ gpu.json) with the device, driver, versions and every
# figure (copied to $OUT too when that is set, so a device `run` brings them back).
#
#   scripts/gpu_check.sh                 on a CUDA machine (about 5-8 minutes on one H200)
#   scripts/gpu_check.sh --cpu           the same flow on this CPU: Triton interpreted, tiny sizes, results
#                                        marked "CPU dry run" (proves the script end to end without a GPU)
#   scripts/gpu_check.sh --fetch-wheels  on a machine with PyPI: download the pure-Python wheels the GPU
#                                        image lacks into runs/gpu-wheels/ (ignored by git; about 0.5 MB)
#
# A session lent a GPU (the workplace's device tool) runs, from the repository root, after --fetch-wheels
# here (and, for the TF32 p-value check on real data, after `python scripts/bench_mmd_kernel.py
# --sections calib` here, which caches runs/mmd-calib/embeddings.safetensors; never commit it):
#
#   run(command="bash scripts/gpu_check.sh", carry=["runs/gpu-wheels", "runs/mmd-calib"], timeout_s=540)
#
# then copies the returned gpu.md / gpu.json over scripts/results/ and commits them. The image (Python 3.12,
# torch 2.11 + CUDA 13, Triton 3.6, lightning, transformers, onnxruntime CPU) has no network and lacks
# jsonargparse and its two helpers (carried as wheels), ray, wandb, TensorRT and the MiniLM package (not
# needed here: tests and benchmarks build their models from a config). refit itself is installed with
# `pip install --no-deps --no-build-isolation --no-index --target`; where that cannot build (an old
# setuptools), a symlink package tree stands in for it. Every step has its own time limit and the script
# carries on after a failing step; the exit code is non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT="$PWD"

MODE=gpu
case "${1:-}" in
  "") ;;
  --cpu) MODE=cpu ;;
  --fetch-wheels) MODE=fetch ;;
  -h | --help)
    sed -n '2,12p' "$0"
    exit 0
    ;;
  *)
    echo "gpu_check.sh: unknown argument '$1'; use one of: (none), --cpu, --fetch-wheels, --help" >&2
    exit 2
    ;;
esac

WHEELS="$ROOT/runs/gpu-wheels"
# The image's missing pure-Python packages, at the versions refit is tested with.
WHEEL_PINS=(jsonargparse==4.53.0 typeshed-client==2.15.0 docstring-parser==0.18.0)

if [[ $MODE == fetch ]]; then
  mkdir -p "$WHEELS"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$WHEELS" "${WHEEL_PINS[@]}" || exit 1
  ls -l "$WHEELS"
  exit 0
fi

if [[ $MODE == cpu ]]; then
  : "${GPU_CHECK_BUDGET:=1200}" # the interpreted flow is slow on a small shared CPU
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  [[ -x $PY ]] || PY=python3
  export TRITON_INTERPRET=1
  LABEL="CPU dry run"
else
  PY="${PYTHON:-python3}"
  LABEL="GPU"
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
WORK="$(mktemp -d)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
FAILED=()
STARTED=$SECONDS
SITE="$WORK/site"
export ROOT PY WORK LOGS WHEELS SITE LABEL

# The whole run must end inside the device call's limit (run's timeout_s): every step's limit is cut to what
# is left of BUDGET, keeping RESERVE seconds for the report; logs go to $OUT after every step.
BUDGET="${GPU_CHECK_BUDGET:-510}"
RESERVE=30

step() { # step NAME LIMIT_SECONDS COMMAND...: run one step with its own limit and log, never abort the script
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc=0 left reserve=$RESERVE
  [[ $name == report ]] && reserve=0
  left=$((BUDGET - (SECONDS - STARTED) - reserve))
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    echo "$name skipped: the ${BUDGET}s budget is spent" | tee -a "$LOGS/steps.txt"
    FAILED+=("$name")
    return
  fi
  echo "== $name (limit ${limit}s)"
  # A child bash, so that a step may be one of the functions below (exported with export -f).
  timeout "$limit" bash -c '"$@"' "$name" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$LOGS/steps.txt"
  tail -n 5 "$LOGS/$name.log"
  [[ $rc == 0 ]] || FAILED+=("$name")
  if [[ -n ${OUT:-} ]]; then tar -czf "$OUT/gpu_logs.tgz" -C "$WORK" logs 2>/dev/null || true; fi
}

# --- 1. what the machine has ------------------------------------------------------------------------------
detect() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
    echo "not available"
  "$PY" - <<'EOF'
import importlib.metadata as md, json, platform, sys
out = {"python": sys.version.split()[0], "platform": platform.platform()}
for name in ["torch", "triton", "lightning", "transformers", "torchmetrics", "onnx", "onnxruntime",
             "onnxruntime-gpu", "tensorrt", "ray", "wandb", "jsonargparse", "setuptools"]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
try:
    import torch
    out["cuda_available"] = torch.cuda.is_available()
    out["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["device"] = p.name
        out["device_count"] = torch.cuda.device_count()
        out["capability"] = f"{p.major}.{p.minor}"
        out["sms"] = p.multi_processor_count
        out["memory_gib"] = round(p.total_memory / 2**30, 1)
except Exception as e:  # reported, not fatal: the report says what is missing
    out["torch_error"] = repr(e)
try:
    import onnxruntime as ort
    out["ort_providers"] = ort.get_available_providers()
except Exception:
    out["ort_providers"] = None
print(json.dumps(out))
EOF
}
export -f detect
step detect 60 detect
tail -n 1 "$LOGS/detect.log" >"$WORK/env.json"

# --- 2. make refit importable: carried wheels, then refit itself with --no-deps ------------------------------
install() {
  mkdir -p "$SITE"
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl) REFIT_SITE
  if ((${#wheels[@]})); then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${wheels[@]}" || return 1
    echo "installed carried wheels: ${wheels[*]##*/}"
  else
    echo "no carried wheels in $WHEELS (scripts/gpu_check.sh --fetch-wheels makes them)"
  fi
  if "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$WORK/refit-site" "$ROOT"; then
    echo "refit: pip install --no-deps --target"
    REFIT_SITE="$WORK/refit-site"
  else
    echo "refit: pip could not build it here; using a symlink package tree instead"
    REFIT_SITE="$WORK/refit-shim"
    mkdir -p "$REFIT_SITE/refit"
    for f in "$ROOT"/framework/*; do ln -s "$f" "$REFIT_SITE/refit/"; done
    ln -s "$ROOT/kernels" "$REFIT_SITE/refit/kernels"
    ln -s "$ROOT/recipes" "$REFIT_SITE/refit/recipes"
    ln -s "$ROOT/configs" "$REFIT_SITE/refit/configs"
  fi
  echo "$REFIT_SITE" >"$WORK/refit_site"
  (cd "$WORK" && PYTHONPATH="$REFIT_SITE:$SITE" "$PY" -c \
    "import refit, refit.kernels, refit.train, refit.drift; print('refit importable from', refit.__file__)")
}
export -f install
step install 180 install
REFIT_SITE="$(cat "$WORK/refit_site" 2>/dev/null || echo "$ROOT")"
# refit from the install first, the carried wheels next, the repository root last (for `tests.gpu`).
export PYTHONPATH="$REFIT_SITE:$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --- 3. tests/gpu ----------------------------------------------------------------------------------------
step pytest_gpu 240 "$PY" -m pytest tests/gpu -q -rs -p no:cacheprovider --junitxml "$WORK/pytest.xml"

# --- 4. benchmarks -------------------------------------------------------------------------------------------
if [[ $MODE == cpu ]]; then
  step bench_mmd 600 "$PY" scripts/bench_mmd_kernel.py --sections gpu --tiny --out "$WORK/mmd"
  step bench_finetune 600 "$PY" scripts/bench_gpu_finetune.py --tiny --out "$WORK/finetune"
else
  step bench_mmd 300 "$PY" scripts/bench_mmd_kernel.py --sections gpu,calib --windows 20 --out "$WORK/mmd"
  step bench_finetune 150 "$PY" scripts/bench_gpu_finetune.py --steps 30 --out "$WORK/finetune"
fi

# --- 5. the report ---------------------------------------------------------------------------------------------
report() {
  "$PY" - <<'EOF'
import json, os, xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

work, label = Path(os.environ["WORK"]), os.environ["LABEL"]
env = json.loads((work / "env.json").read_text() or "{}")
smi = (work / "logs" / "detect.log").read_text().splitlines()[0]
steps = (work / "logs" / "steps.txt").read_text().split("\n")
tests = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "skips": [], "failures": []}
if (work / "pytest.xml").is_file():
    for case in ET.parse(work / "pytest.xml").iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            tests["skipped"] += 1
            tests["skips"].append(f"{name}: {case.find('skipped').get('message')}")
        elif case.find("failure") is not None or case.find("error") is not None:
            tests["failed"] += 1
            tests["failures"].append(name)
        else:
            tests["passed"] += 1
result = {
    "label": label,
    "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "nvidia_smi": smi,
    "environment": env,
    "steps": [s for s in steps if s],
    "failed_steps": os.environ["FAILED_STEPS"].split(),
    "seconds": int(os.environ["ELAPSED"]),
    "tests_gpu": tests,
}
md = [
    f"# GPU validation ({label}{': ' + env['device'] if env.get('device') else ''})",
    "",
    f"Written {result['written_at']} by scripts/gpu_check.sh in {result['seconds']} s."
    + (" A CPU dry run: Triton interpreted, tiny sizes; the figures prove the flow, they measure nothing."
       if label != "GPU" else ""),
    "",
    f"- nvidia-smi: {smi}",
    f"- Python {env.get('python')}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}); triton "
    f"{env.get('triton')}; lightning {env.get('lightning')}; transformers {env.get('transformers')}; "
    f"onnxruntime {env.get('onnxruntime')} (providers {env.get('ort_providers')}); TensorRT {env.get('tensorrt')}",
    f"- steps: {'; '.join(result['steps'])}" + (f" -- FAILED: {', '.join(result['failed_steps'])}" if result["failed_steps"] else ""),
    "",
    f"## tests/gpu: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped",
    "",
    *[f"- failed: {f}" for f in tests["failures"]],
    *[f"- skipped: {s}" for s in sorted(set(tests["skips"]))],
    "",
]
for name in ("mmd", "finetune"):
    js, mdf = work / f"{name}.json", work / f"{name}.md"
    if js.is_file():
        result[name] = json.loads(js.read_text())
        md += [line.replace("# ", "## ", 1) if line.startswith("# ") else line for line in mdf.read_text().splitlines()]
        md.append("")
    else:
        md += [f"## {name}: no result (see the step's log)", ""]
(work / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
(work / "gpu.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
}
export -f report
export ELAPSED=$((SECONDS - STARTED)) FAILED_STEPS="${FAILED[*]:-}"
step report 30 report
mkdir -p scripts/results
cp "$WORK/gpu.md" "$WORK/gpu.json" scripts/results/ 2>/dev/null || FAILED+=("copy")
if [[ -n ${OUT:-} ]]; then cp "$WORK/gpu.md" "$WORK/gpu.json" "$OUT/" 2>/dev/null || true; fi
cat "$WORK/gpu.md" 2>/dev/null
echo "gpu_check ($LABEL) done in $((SECONDS - STARTED)) s; failed steps: ${FAILED[*]:-none}"
((${#FAILED[@]} == 0))
