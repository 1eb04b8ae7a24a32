#!/bin/sh
# The GPU check of distributed training (docs/PERFORMANCE.md), about 2 minutes on one GPU:
#   sh tools/gpu_ddp_check.sh [OUT_DIR]
# torchrun with one process per visible GPU (NCCL) trains Config_Demo on the generated set, once plainly and once
# with sync_bn and mixed precision; train.sh trains on one GPU; test.py scores the torchrun session on CUDA.
set -eu
OUT=${1:-${OUT:-gpu_ddp_out}}
mkdir -p "$OUT"
RUNS=$(mktemp -d)
if [ -d .wheels ]; then python3 -m pip install -q --no-deps --no-index .wheels/*.whl; fi
GPUS=$(nvidia-smi -L | wc -l)
nvidia-smi -L | tee "$OUT/nvidia_smi.txt"
run() {  # name, then train_model.py arguments
    name=$1; shift
    started=$(date +%s)
    python3 -m torch.distributed.run --standalone --nproc_per_node "$GPUS" train_model.py -c Config_Demo \
        --device cuda --no_progress --set epochs=5 output_root="$RUNS/$name" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"
    echo "$name: $(($(date +%s) - started)) s, session $(tail -n 1 "$OUT/$name.out")"
    grep -E "processes|^Epoch|done" "$OUT/$name.log" | cut -c1-220
}
run torchrun_nccl
run torchrun_nccl_syncbn_amp sync_bn=True amp=True
SESSION=$(tail -n 1 "$OUT/torchrun_nccl.out")
python3 test.py -c Config_Demo --set output_root="$RUNS/torchrun_nccl" --test_session "$SESSION" --gpu 0 \
    --no_progress 2>&1 | tail -n 3 | tee "$OUT/test_cuda.txt"
sh train.sh 0 Config_Demo --no_progress --set epochs=2 output_root="$RUNS/train_sh" 2>&1 | grep -E "^Epoch|done" \
    | cut -c1-160 | tee "$OUT/train_sh.txt"
echo "gpu ddp check done"
