#!/usr/bin/env bash
# The demo: write the synthetic data set if needed, train on it (CPU is fine), test the session, draw the results,
# and show whether the model reads its report (Dice with true, shuffled and empty reports, and the every-blob
# oracle that segments every lesion-like blob without reading).
#   sh demo.sh [more train_model.py arguments, e.g. --set epochs=5]
set -eu
cd "$(dirname "$0")"
# No pipe: a failed training stops the demo here (set -e) instead of testing a session that does not exist.
printed=$(python train_model.py -c Config_Demo "$@")
session=$(printf '%s\n' "$printed" | tail -n 1)
python test.py -c Config_Demo -t "$session" --test_vis --text_ablation
echo "TensorBoard: tensorboard --logdir Demo/RecLMIS/$session/tensorboard_logs"
