#!/usr/bin/env bash
# Train RecLMIS: sh train.sh <gpu ids|cpu> <Config> [more train_model.py arguments]
#   sh train.sh 0 Config_QaTa            one GPU (chosen only through CUDA_VISIBLE_DEVICES)
#   sh train.sh 0,1,2,3 Config_QaTa      four GPUs: torchrun, one process per GPU (DDP over NCCL)
#   sh train.sh cpu Config_Demo          the CPU
# batch_size in the config is the global batch, split over the GPUs. For several nodes, call torchrun yourself
# (docs/USAGE.md, "Several GPUs or nodes").
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: sh train.sh <gpu ids|cpu> <Config> [more train_model.py arguments]" >&2
    exit 2
fi
devices=$1
config=$2
shift 2
cd "$(dirname "$0")"
if [ "$devices" = "cpu" ]; then
    exec python train_model.py -c "$config" --device cpu "$@"
fi
count=$(echo "$devices" | tr ',' '\n' | grep -c .)
if [ "$count" -gt 1 ]; then
    CUDA_VISIBLE_DEVICES=$devices exec python -m torch.distributed.run --standalone --nproc_per_node "$count" \
        train_model.py -c "$config" --device cuda "$@"
fi
CUDA_VISIBLE_DEVICES=$devices exec python train_model.py -c "$config" "$@"
