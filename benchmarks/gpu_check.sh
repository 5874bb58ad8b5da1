#!/usr/bin/env bash
# The one GPU check of issue #13, for a machine with a CUDA GPU: the CUDA tests, then the table
# of benchmarks/gpu_check.py (inference tokens/s for small and original in fp32/bf16 at several
# batch sizes, bf16 training tokens/s for the PTB recipe shape, peak GPU memory, max error
# against the CPU reference). Bounded: under 8 minutes. Logs and the table go to OUT_DIR.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [DATA_DIR]
#
# DATA_DIR holds wikitext2/wiki.valid.tokens and ptb_mikolov/ptb.valid.txt (default:
# ../shared/data). Without a GPU, ELMOKIT_GPU_CHECK_DEVICE=cpu GPU_CHECK_ARGS=--quick checks the
# script itself (tests/test_gpu_check.py does). Uses .venv/bin/python if there, else python3
# with the repository's src on PYTHONPATH (a GPU machine with torch but no install of ours).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [DATA_DIR]}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
device=${ELMOKIT_GPU_CHECK_DEVICE:-cuda}
data=${2:-}
{
    date -u
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} >"$out/environment.txt" 2>&1

timeout 180 "$python" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py \
    >"$out/cuda_tests.log" 2>&1
tests=$?
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of options
timeout 360 "$python" benchmarks/gpu_check.py --device "$device" --out "$out" \
    ${data:+--data "$data"} ${GPU_CHECK_ARGS:-} >"$out/gpu_check.log" 2>&1
table=$?

echo "== CUDA tests (exit $tests): $out/cuda_tests.log"
tail -n 5 "$out/cuda_tests.log"
echo "== table (exit $table): $out/gpu_check.md"
cat "$out/gpu_check.md" 2>/dev/null || tail -n 20 "$out/gpu_check.log"
[ "$tests" -eq 0 ] && [ "$table" -eq 0 ]
