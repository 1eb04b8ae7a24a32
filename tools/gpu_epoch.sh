#!/bin/sh
# Where a training epoch's time goes on a lent GPU, in one short call (docs/PERFORMANCE.md):
#   sh tools/gpu_epoch.sh DATA_SUBSET OUT_DIR            on the GPU machine
#   sh tools/gpu_epoch.sh --subset DATA SUBSET [N]      here, first: copy N training pairs (default 800), 3N/8
#                                                        validation pairs (the recipe's 300) and 16 test pairs
# The subset keeps the data set's layout and its report tables (rows naming images left out are only warned
# about); 800 + 300 + 16 QaTa-COV19 pairs take about 32 MiB, under the 64 MiB a device call carries. On the GPU it runs
# `python -m tools.benchmark --epoch` for the full-size model (CONFIG, default Config_QaTa, random text tower) in
# fp32 (then the operators of 8 more steps and their FLOPs: --ops 8), with amp=True, with amp=True and
# channels_last=True, and with 4 loader workers, each to OUT_DIR/<row>.json.
# DEVICE (default cuda) and SETTINGS (more --set values) let the tests run it on the CPU at a tiny size.
# AUTHORS, a checkout of the authors' code (a git clone of github ShawnHuang497/RecLMIS, 4 MiB; kept under the git-ignored
# external/ so a device call can carry it), adds their training step beside ours on the same batches
# (python -m tools.authors_epoch) to OUT_DIR/authors.json. On the GPU machine:
#   AUTHORS=external/RecLMIS sh tools/gpu_epoch.sh datasets/qata800 $OUT
set -eu
if [ "${1:-}" = "--subset" ]; then
    DATA=$2; SUBSET=$3; N=${4:-800}
    [ -e "$SUBSET" ] && { echo "error: $SUBSET exists; give a new folder" >&2; exit 2; }
    for split in Train_Folder Val_Folder Test_Folder; do
        case $split in Train_Folder) count=$N ;; Val_Folder) count=$((N * 3 / 8)) ;; *) count=16 ;; esac
        mkdir -p "$SUBSET/$split/img" "$SUBSET/$split/labelcol"
        find "$DATA/$split" -maxdepth 1 -type f -exec cp {} "$SUBSET/$split/" \;
        ls "$DATA/$split/labelcol" | sort | head -n "$count" | while read -r mask; do
            cp "$DATA/$split/labelcol/$mask" "$SUBSET/$split/labelcol/"
            image=${mask#mask_}
            stem=${image%.*}
            for candidate in "$DATA/$split/img/$image" "$DATA/$split/img/$stem".*; do
                if [ -f "$candidate" ]; then cp "$candidate" "$SUBSET/$split/img/"; break; fi
            done
        done
    done
    du -sh "$SUBSET"
    exit 0
fi
DATA=$1
OUT=${2:-gpu_epoch_out}
CONFIG=${CONFIG:-Config_QaTa}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ]; then nvidia-smi -L | tee "$OUT/nvidia_smi.txt"; fi
COMMON="train_dataset=$DATA/Train_Folder val_dataset=$DATA/Val_Folder test_dataset=$DATA/Test_Folder clip_weights=None"
run() {
    row=$1; shift
    # shellcheck disable=SC2086  # COMMON and SETTINGS are lists of key=value words
    python3 -m tools.benchmark -c "$CONFIG" --device "$DEVICE" --epoch --set $COMMON ${SETTINGS:-} "$@" \
        --json "$OUT/$row.json" | tee "$OUT/$row.txt"
}
run fp32 --ops 8
run amp amp=True
run amp_channels_last amp=True channels_last=True
run amp_channels_last_workers4 amp=True channels_last=True num_workers=4
if [ -n "${AUTHORS:-}" ]; then
    # shellcheck disable=SC2086
    python3 -m tools.authors_epoch --authors "$AUTHORS" -c "$CONFIG" --device "$DEVICE" --set $COMMON ${SETTINGS:-} \
        --json "$OUT/authors.json" | tee "$OUT/authors.txt"
fi
