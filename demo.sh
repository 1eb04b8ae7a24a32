#!/usr/bin/env bash
# The demo: write the synthetic data set if needed, train on it (CPU is fine), test the session, draw the results.
#   sh demo.sh [more train_model.py arguments, e.g. --set epochs=5]
set -eu
cd "$(dirname "$0")"
session=$(python train_model.py -c Config_Demo "$@" | tail -n 1)
python test.py -c Config_Demo -t "$session" --test_vis True
echo "TensorBoard: tensorboard --logdir Demo/RecLMIS/$session/tensorboard_logs"
