#!/usr/bin/env bash
# One GPU check, for a session lent a GPU: one device call of at most 8 minutes, from a copy of the
# repo root, with only torch and transformers installed (no litho install, no Ray, Hydra or datasets,
# no network). It runs, each under its own time limit:
#   1. the teacher bench: transformers generate() vs the fast engine, batches 64/256/1024, greedy
#      (with the share of rows whose first 64 bf16 tokens agree) and sampled (litho's sampler);
#   2. the scorer bench: plain forward vs LMScorer, 64 x 512 (bench/bench_scorer.py as it is);
#   3. teacher=vllm in litho's pipeline vs vLLM's LLM.generate and Ray Data LLM, 256 prompts x 512 tokens
#      (bench/bench_vllm.py --gpu; it says "skipped" where vLLM is not installed);
#   4. pytest -m gpu on the test files that have GPU tests (skipped with a note without pytest);
#   5. the probe's GPU preset (pipeline/probe/gpu.py) on the pack in --pack DIR (default runs/gpu-pack,
#      built here with python -m pipeline.probe.pack; carried to the machine, it is git-ignored), as
#      many seeds as its time slot allows (skipped with a note when there is no pack);
# and writes everything to <out>/gpu-<date>.md (default bench/results/).
#
#   bash bench/gpu_check.sh                      # on the GPU machine (the run tool: then copy to $OUT)
#   bash bench/gpu_check.sh --out "$OUT"         # write the report straight into the tool's $OUT
#   bash bench/gpu_check.sh --dry-run            # CPU, tiny sizes: checks the script itself (tests do)
#   bash bench/gpu_check.sh --pack runs/gpu-pack # the probe pack to train (the dry run wants a tiny one)
# Weights are random unless LITHO_GPU_MODEL names a model directory (speed does not depend on them).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT_DIR=bench/results
DRY=0
PACK=runs/gpu-pack
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR=$2; shift ;;
    --pack) PACK=$2; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --out DIR, --pack DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
STAMP=$(date +%Y-%m-%d)
REPORT="$OUT_DIR/gpu-$STAMP.md"
[ "$DRY" = 1 ] && REPORT="$OUT_DIR/gpu-$STAMP-dry-run.md"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MODEL_ARGS=()
[ -n "${LITHO_GPU_MODEL:-}" ] && MODEL_ARGS=(--model "$LITHO_GPU_MODEL")

if [ "$DRY" = 1 ]; then  # the same steps at smoke-test sizes on the CPU
  # One thread: on a shared 2-core machine two spinning OpenMP threads per small op stall each other.
  TEACHER_GREEDY=(--device cpu --threads 1 --shape tiny-llama --batches 2,4 --new-tokens 64 --prompt-len 16 --dtype bfloat16)
  TEACHER_SAMPLED=(--device cpu --threads 1 --shape tiny-llama --batches 2,4 --new-tokens 8 --prompt-len 16 --sample)
  SCORER=(--device cpu --threads 1 --random --quick --seq-len 64 --compile off --json)
  VLLM=(--dry-run --prompts 4 --new-tokens 8)
  PROBE=(--device cpu)
  LIMITS=(180 180 240 120 60 120)  # generous: the dry run checks the script, not the speed
else
  TEACHER_GREEDY=(--batches 64,256,1024 --new-tokens 128 --dtype bfloat16 "${MODEL_ARGS[@]}")
  TEACHER_SAMPLED=(--batches 64,256,1024 --new-tokens 128 --dtype bfloat16 --sample "${MODEL_ARGS[@]}")
  SCORER=(--batch-size 64 --seq-len 512 --json)
  VLLM=(--gpu --prompts 256 --new-tokens 512)
  PROBE=(--time-limit 75)  # its students start only while they can finish inside the step's 100 s
  # greedy, sampled, scorer, pytest, vllm, probe: 450 s, inside one 8-minute device call with its start
  LIMITS=(80 60 50 40 120 100)
fi

{
  echo "# GPU check, $(date '+%Y-%m-%d %H:%M')$([ "$DRY" = 1 ] && echo ' (dry run on CPU, tiny sizes)')"
  echo
  echo '```'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')"
  echo '```'
} > "$REPORT"

FAILED=0
step() {  # step TITLE SECONDS COMMAND...: run under a time limit, append its output and exit code
  local title=$1 limit=$2
  shift 2
  local started=$SECONDS
  printf '\n## %s\n\n```\n$ %s\n' "$title" "$*" >> "$REPORT"
  timeout --kill-after=10 "$limit" "$@" >> "$REPORT" 2>&1
  local code=$?
  [ $code -ne 0 ] && FAILED=1
  [ $code -eq 124 ] && echo "(stopped after its ${limit} s limit)" >> "$REPORT"
  printf '```\nexit %s in %s s\n' "$code" "$((SECONDS - started))" >> "$REPORT"
  echo "gpu_check: $title: exit $code in $((SECONDS - started)) s" >&2
}

step "Teacher: generate() vs fast engine, greedy bf16 (agree64: rows whose first 64 tokens match)" "${LIMITS[0]}" \
  $PY bench/bench_teacher.py "${TEACHER_GREEDY[@]}"
step "Teacher: generate() vs fast engine, sampled (temperature 0.7, top-p 0.9, repetition penalty 1.1)" "${LIMITS[1]}" \
  $PY bench/bench_teacher.py "${TEACHER_SAMPLED[@]}"
step "Scorer: plain forward vs LMScorer" "${LIMITS[2]}" $PY bench/bench_scorer.py "${SCORER[@]}"
step "teacher=vllm: litho's streaming stage vs LLM.generate vs Ray Data LLM" "${LIMITS[4]}" \
  $PY bench/bench_vllm.py "${VLLM[@]}"

GPU_TESTS=$(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests | sort | tr '\n' ' ')
if $PY -c "import pytest" 2>/dev/null; then
  # shellcheck disable=SC2086  # one argument per file
  step "pytest -m gpu" "${LIMITS[3]}" env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $PY -m pytest -q -p no:cacheprovider -m gpu $GPU_TESTS
else
  printf '\n## pytest -m gpu\n\npytest is not installed here: not run (files: %s)\n' "$GPU_TESTS" >> "$REPORT"
fi
if [ -f "$PACK/pack.json" ]; then
  PROBE_OUT=$(mktemp -d)
  step "Probe: the GPU preset on $PACK (pipeline/probe/gpu.py)" "${LIMITS[5]}" \
    $PY -m pipeline.probe.gpu --pack "$PACK" --out "$PROBE_OUT" "${PROBE[@]}"
  cp "$PROBE_OUT/probe-gpu.json" "$OUT_DIR/probe-gpu-$STAMP$([ "$DRY" = 1 ] && echo -dry-run).json" 2>/dev/null
else
  printf '\n## Probe: the GPU preset\n\nno pack in %s: not run (build it here: python -m pipeline.probe.pack --fit +experiment=probe_gpu output.dir=%s)\n' "$PACK" "$PACK" >> "$REPORT"
fi
echo "gpu_check: wrote $REPORT" >&2
exit $FAILED
