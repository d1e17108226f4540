#!/usr/bin/env bash
# trt-neg GPU self-test: everything that needs a GPU and TensorRT-LLM 1.2.x, in one go, with a compact report.
#
#   docker run --rm --gpus all trt-neg                 # in the image (this is its default command)
#   bash docker/selftest.sh                            # any machine with TensorRT-LLM 1.2.x + a GPU, from the repo
#
# Steps (each logged to $WORK/logs/<step>.log; a step whose prerequisite failed is reported as SKIP):
#   gpu        a CUDA GPU visible to torch (nvidia-smi -L for the record)
#   trtllm     tensorrt_llm 1.2.x and tensorrt importable
#   plugins    cmake -S plugins -B build/plugins -DTENSORRT_ROOT=... && cmake --build  -> libtrt_neg_plugins.so
#   ctest      the plugin-core C++ unit tests built alongside (CPU)
#   tiny       python -m trt_neg.checkpoint.synthetic --preset tiny --seed 0 (the built-in tiny HF checkpoint)
#   engine     python build_engine.py: tiny -> TensorRT-LLM checkpoint -> fp32 engine with our plugins
#   run        python run.py --backend trtllm: one greedy request through the executor (smoke)
#   gpu_check  python -m trt_neg.gpu_check --quick: NEG and GDN kernels vs references, CUDA backend, timings
#   pytest     pytest -m "gpu or trtllm" with TRT_NEG_TINY_ENGINE / TRT_NEG_PLUGIN_LIB set: the end-to-end
#              engine decodes vs the torch reference (tokens, entropies, fired flags) and the GPU kernel tests
# Exit status: 0 when every step passed (and pytest ran at least one test without failures), 1 otherwise.
#
# Environment: TENSORRT_ROOT (default /usr/local/tensorrt), CUDA_ARCHS (default: this GPU's compute
# capability), TRT_NEG_SELFTEST_DIR (work directory; default a fresh /tmp/trt-neg-selftest.*), PYTHON
# (default python3), TRT_NEG_SELFTEST_STEP_TIMEOUT (seconds per step, default 1200),
# TRT_NEG_SELFTEST_PYTEST_ARGS (extra pytest arguments).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
TENSORRT_ROOT="${TENSORRT_ROOT:-/usr/local/tensorrt}"
WORK="${TRT_NEG_SELFTEST_DIR:-$(mktemp -d /tmp/trt-neg-selftest.XXXXXX)}"
STEP_TIMEOUT="${TRT_NEG_SELFTEST_STEP_TIMEOUT:-1200}"
BUILD_DIR="$ROOT/build/plugins"
LIB="$BUILD_DIR/libtrt_neg_plugins.so"
mkdir -p "$WORK/logs"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # works from a plain checkout too (no pip install -e)

NAMES=(); RESULTS=(); SECONDS_TAKEN=(); DETAILS=()
declare -A STATUS

# run_step NAME "needs" DETAIL-COMMAND -- COMMAND...   (needs: space-separated steps that must have passed)
run_step() {
    local name=$1 needs=$2; shift 2
    local dep
    for dep in $needs; do
        if [[ "${STATUS[$dep]:-}" != PASS ]]; then
            NAMES+=("$name"); RESULTS+=(SKIP); SECONDS_TAKEN+=(0); DETAILS+=("needs $dep")
            STATUS[$name]=SKIP
            printf '[selftest] %-9s SKIP (needs %s)\n' "$name" "$dep"
            return
        fi
    done
    printf '[selftest] %-9s ...\n' "$name"
    local start end rc
    start=$(date +%s.%N)
    timeout --kill-after=30 "$STEP_TIMEOUT" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    NAMES+=("$name"); SECONDS_TAKEN+=("$secs")
    if [[ $rc -eq 0 ]]; then
        STATUS[$name]=PASS; RESULTS+=(PASS); DETAILS+=("$(summary "$name")")
    else
        STATUS[$name]=FAIL; RESULTS+=(FAIL)
        [[ $rc -eq 124 || $rc -eq 137 ]] && DETAILS+=("timed out after ${STEP_TIMEOUT}s") || DETAILS+=("exit $rc")
        echo "---- last lines of $WORK/logs/$name.log ----"
        tail -n 25 "$WORK/logs/$name.log"
        echo "----"
    fi
    printf '[selftest] %-9s %s (%s s)\n' "$name" "${STATUS[$name]}" "$secs"
}

# One line worth reporting from a passed step's log.
summary() {
    local log="$WORK/logs/$1.log"
    case $1 in
        gpu|trtllm) grep -m1 '^versions:' "$log" | cut -c11- ;;
        plugins) echo "$(basename "$LIB") $(du -h "$LIB" 2>/dev/null | cut -f1)" ;;
        ctest) grep -m1 'tests passed' "$log" ;;
        engine) grep -m1 '^wrote engine directory' "$log" | sed 's/^wrote engine directory //' ;;
        run) tail -n 1 "$log" | cut -c1-100 ;;
        gpu_check) grep -m1 'overall:' "$log" ;;
        pytest) grep -E '[0-9]+ (passed|failed|skipped)' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//' ;;
        *) echo "" ;;
    esac
}

step_gpu() {
    nvidia-smi -L || echo "(nvidia-smi not available)"
    "$PY" -c '
import sys, torch
ok = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if ok else "no GPU visible to torch"
print(f"versions: torch {torch.__version__} (cuda {torch.version.cuda}), {name}")
sys.exit(0 if ok else 1)'
}

step_trtllm() {
    "$PY" -c '
import sys
import tensorrt, tensorrt_llm
v = str(tensorrt_llm.__version__)
print(f"versions: tensorrt_llm {v}, tensorrt {tensorrt.__version__}")
if not v.startswith("1.2."):
    sys.exit(f"need tensorrt_llm 1.2.x (the last releases with the TensorRT engine backend), found {v}")'
}

step_plugins() {
    local archs="${CUDA_ARCHS:-}"
    if [[ -z "$archs" ]]; then
        archs=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
    fi
    cmake -S plugins -B "$BUILD_DIR" -DTENSORRT_ROOT="$TENSORRT_ROOT" ${archs:+-DCMAKE_CUDA_ARCHITECTURES="$archs"} \
        && cmake --build "$BUILD_DIR" -j"$(nproc)" \
        && test -f "$LIB" || { echo "libtrt_neg_plugins.so was not built: see the cmake output above (TensorRT is looked for under $TENSORRT_ROOT)"; return 1; }
}

echo "[selftest] trt-neg GPU self-test in $ROOT, work directory $WORK"
export PY LIB BUILD_DIR TENSORRT_ROOT
export CUDA_ARCHS="${CUDA_ARCHS:-}"
export -f step_gpu step_trtllm step_plugins
run_step gpu "" bash -c step_gpu
run_step trtllm "" bash -c step_trtllm
run_step plugins "" bash -c step_plugins
run_step ctest "plugins" ctest --test-dir "$BUILD_DIR" --output-on-failure
run_step tiny "" "$PY" -m trt_neg.checkpoint.synthetic --preset tiny --seed 0 --output "$WORK/tiny" --overwrite
run_step engine "gpu trtllm plugins tiny" "$PY" build_engine.py --model "$WORK/tiny" --output "$WORK/engine" \
    --checkpoint-dir "$WORK/engine.ckpt" --dtype float32 --max-batch-size 4 --max-input-len 64 --max-seq-len 128 \
    --max-num-tokens 256 --plugin-lib "$LIB" --overwrite --no-progress
run_step run "engine" "$PY" run.py --backend trtllm --engine-dir "$WORK/engine" --token-ids 1,17,33,250,7 \
    --max-new-tokens 8 --ignore-eos --json
# --skip pytest: the marked tests run once, in the next step, with the engine handed over.
run_step gpu_check "gpu" "$PY" -m trt_neg.gpu_check --quick --skip pytest --out-dir "$WORK/gpu_check"

# The marked tests: they skip themselves when something they need is missing, so the engine path is
# handed over explicitly (a missing engine shows up as skips, reported below).
PYTEST_ENV=(TRT_NEG_PLUGIN_LIB="$LIB")
[[ "${STATUS[engine]}" == PASS ]] && PYTEST_ENV+=(TRT_NEG_TINY_ENGINE="$WORK/engine")
# shellcheck disable=SC2086
run_step pytest "gpu" env "${PYTEST_ENV[@]}" "$PY" -m pytest -m "gpu or trtllm" -q -rs -p no:cacheprovider \
    --junitxml "$WORK/pytest.xml" ${TRT_NEG_SELFTEST_PYTEST_ARGS:-}

# pytest "passed" with nothing run, or with skips of the engine tests, is not a pass of the self-test.
if [[ "${STATUS[pytest]}" == PASS ]]; then
    read -r n_pass n_skip < <("$PY" - "$WORK/pytest.xml" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
print(tests - skipped - failed, skipped)
PYEOF
    )
    if [[ "${n_pass:-0}" -eq 0 ]]; then
        STATUS[pytest]=FAIL; RESULTS[${#RESULTS[@]}-1]=FAIL; DETAILS[${#DETAILS[@]}-1]="no marked test ran (all skipped)"
    elif [[ "${n_skip:-0}" -gt 0 ]]; then
        DETAILS[${#DETAILS[@]}-1]+=" (skips: see $WORK/logs/pytest.log)"
    fi
fi

echo
echo "==================== trt-neg self-test report ===================="
failed=0
for i in "${!NAMES[@]}"; do
    printf '%-10s %-5s %8s s  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_TAKEN[$i]}" "${DETAILS[$i]}"
    [[ "${RESULTS[$i]}" != PASS ]] && failed=1
done
echo "logs: $WORK/logs   engine: $WORK/engine"
if [[ $failed -eq 0 ]]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
echo "==================================================================="
exit $failed
