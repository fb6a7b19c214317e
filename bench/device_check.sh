#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine (one H200, no network) from the repo root:
#   1. the GPU-marked tests (pytest -m gpu),
#   2. a bf16 CUDA run of 2SSP on stories260K through experiments/run.py (the paper protocol,
#      perplexity on the first 16 windows of each corpus, inference rows: eval.inference=true),
#   3. 2SSP on a random-init Llama-2-7B-shaped model built on the GPU: seconds per stage and
#      peak GPU memory, then prefill latency, decode throughput, KV cache and memory of the
#      dense model and of 2SSP, ShortGPT and SliceGPT at 37.5% (bench/gpu_llama7b.py).
# `make device-prep` (here, with network) fills the carried folders: .whl (wheels of what the
# machine's image lacks, for its Python 3.12) and .device_shared (stories260K and the text,
# copied from ../shared, which does not travel). Everything is written under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export TWOSSP_SHARED=$PWD/.device_shared HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
date -u +"run at %Y-%m-%dT%H:%M:%SZ" | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
    transformers.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"

status=0
python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors -m gpu tests/ 2>&1 | tee "$OUT/gpu_tests.log" || status=1

python3 experiments/run.py model=stories260k method=twossp sparsity=0.375 \
    model.dtype=bfloat16 model.device=cuda eval.max_windows=16 eval.inference=true progress=false \
    experiment_name=device_check paths.results_dir=/tmp/device_results \
    paths.output_dir=/tmp/device_hydra 2>&1 | tee "$OUT/stories260k_bf16.log" || status=1
# At most 8 files come back from $OUT: the run's rows as one parquet file, not its folders.
cp /tmp/device_results/runs/*.parquet "$OUT/stories260k_bf16.parquet" 2>/dev/null || status=1

python3 -m bench.gpu_llama7b --out "$OUT/llama2_7b_shape.json" 2>&1 \
    | tee "$OUT/llama2_7b_shape.log" || status=1
exit $status
