#!/bin/sh
# The GPU check of docs/PERFORMANCE.md, in one short run (about 3 minutes on one H100, before step 6 was added):
#   sh tools/gpu_check.sh [OUT_DIR]
# 1. tools.benchmark on CUDA at the QaTa size: inference at batch 1, 8 and 32 in fp32, bf16 and fp16 autocast,
#    training steps at batch 4 and 32 in fp32 and mixed precision (fp16 + GradScaler), checkpoint sizes, memory;
#    then inference on the CPU of the same machine;
# 2. a short mixed-precision training run on CUDA (Config_Demo, generated data: pinned memory, non-blocking
#    copies, fp16 autocast and gradient scaling), then test.py on CUDA in fp32 and fp16;
# 3. test.py naming a GPU index the machine does not have must fail with a clear message;
# 4. the fp32/bf16/fp16 mask agreement on the demo test split;
# 5. --test_vis, --text_ablation and test.py predict on CUDA;
# 6. torch.compile and the text feature cache on CUDA: the benchmark's rows, test.py --compile, and test.py with
#    the text cache off (its scores must equal step 2's fp32 scores, which ran with the cache on).
# Wheels of packages the machine lacks can be put in .wheels/ (installed offline, without dependencies).
set -eu
OUT=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
RUNS=$(mktemp -d)
if [ -d .wheels ]; then python3 -m pip install -q --no-deps --no-index .wheels/*.whl; fi
nvidia-smi -L | tee "$OUT/nvidia_smi.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/nvidia_smi.txt"

python3 -m tools.benchmark -c Config_QaTa --device cuda --batch_sizes 1 8 32 --precision fp32 bf16 fp16 \
    --train_batch 4 32 --repeats 10 --warmup 3 --json "$OUT/bench_cuda.json" | tee "$OUT/bench_cuda.txt"
python3 -m tools.benchmark -c Config_QaTa --device cpu --batch_sizes 1 8 --train_batch 0 --no_memory \
    --repeats 3 --json "$OUT/bench_cpu.json" | tee "$OUT/bench_cpu.txt"

SESSION=$(python3 train_model.py -c Config_Demo --device cuda --no_progress \
    --set amp=True epochs=6 output_root="$RUNS" 2>"$OUT/train_amp_cuda.log" | tail -n 1)
grep -E "epoch|best|done" "$OUT/train_amp_cuda.log" | tail -n 14
: > "$OUT/test_cuda.txt"
for precision in fp32 fp16; do
    python3 test.py -c Config_Demo --set output_root="$RUNS" --test_session "$SESSION" --device cuda:0 \
        --precision "$precision" --no_progress 2>&1 | tee -a "$OUT/test_cuda.txt"
done
if python3 test.py -c Config_Demo --set output_root="$RUNS" --test_session "$SESSION" --device cuda:7 \
        >"$OUT/bad_gpu.txt" 2>&1; then
    echo "FAIL: test.py --device cuda:7 succeeded"; exit 1
fi
cat "$OUT/bad_gpu.txt"
python3 -m tools.benchmark -c Config_Demo --set output_root="$RUNS" --device cuda --precision bf16 fp16 \
    --agreement "$RUNS/Demo/RecLMIS/$SESSION/models/best_model-RecLMIS.pth.tar" | tee "$OUT/agreement_cuda.txt"
python3 test.py -c Config_Demo --set output_root="$RUNS" --test_session "$SESSION" --gpu 0 --test_vis True \
    --text_ablation --no_progress 2>&1 | tail -n 4 | tee "$OUT/text_ablation_cuda.txt"
python3 test.py predict --checkpoint "$RUNS/Demo/RecLMIS/$SESSION/models/best_model-RecLMIS.pth.tar" \
    --image datasets/Demo/Test_Folder/img/test_0000.png --text "Bilateral pulmonary infection." \
    --out "$OUT/predict_cuda" --device cuda
python3 -m tools.benchmark -c Config_QaTa --device cuda --batch_sizes 1 8 --precision fp32 bf16 --compile \
    --text_cache --train_batch 0 --no_memory --repeats 10 --warmup 3 --json "$OUT/bench_cuda_compile.json" \
    | tee "$OUT/bench_cuda_compile.txt"
python3 test.py -c Config_Demo --set output_root="$RUNS" --test_session "$SESSION" --device cuda:0 --compile \
    --no_progress 2>&1 | tee "$OUT/test_cuda_compile.txt"
python3 test.py -c Config_Demo --set output_root="$RUNS" --test_session "$SESSION" --device cuda:0 --text_cache 0 \
    --no_progress 2>&1 | tee "$OUT/test_cuda_no_text_cache.txt"
grep dice_ "$OUT/test_cuda_no_text_cache.txt" > "$OUT/dice_no_cache.txt"
grep dice_ "$OUT/test_cuda.txt" | head -n 2 > "$OUT/dice_cache.txt"
cmp "$OUT/dice_cache.txt" "$OUT/dice_no_cache.txt" && echo "text cache on CUDA: the same scores as without it"
echo "gpu check done"
