#!/usr/bin/env bash
# Train RecLMIS: sh train.sh <gpu ids|cpu> <Config> [more train_model.py arguments]
#   sh train.sh 0 Config_QaTa            one GPU (chosen only through CUDA_VISIBLE_DEVICES)
#   sh train.sh cpu Config_Demo          the CPU
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
CUDA_VISIBLE_DEVICES=$devices exec python train_model.py -c "$config" "$@"
