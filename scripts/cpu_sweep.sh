#!/usr/bin/env bash
# Reproduce benchmarks/cpu_sweep/ with one command (`make cpu-sweep`): CPU isoFLOP sweeps on prose
# (c4-like) and code (github-code-like) built by ../shared/corpora/build.py, one shared 2048-token BPE,
# a first pass plus one refined pass per dataset, then the joint fit, figures and report.
# Every step is resumable: rerunning after a kill picks up where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CORPORA=${CORPORA:-data_cache/corpora}
OUT=${OUT:-benchmarks/cpu_sweep}
TOK=data_cache/bpe2k-mix
export HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-disabled}
mkdir -p "$OUT"
LOG="$OUT/commands.log"
stamp() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [ ! -d "$CORPORA/c4-like" ] || [ ! -d "$CORPORA/github-code-like" ]; then
    stamp "building corpora into $CORPORA"
    "$PY" ../shared/corpora/build.py --out "$CORPORA"
fi
stamp "tokenizer: $TOK"
"$PY" scripts/train_tokenizer.py --vocab 2048 --out "$TOK" --chars 4e6 \
    c4="$CORPORA/c4-like" github_code="$CORPORA/github-code-like"

prose=(data=c4 "data.path=$CORPORA/c4-like" "data.tokenizer=$TOK" sweep.name=cpu-prose)
code=(data=github_code "data.path=$CORPORA/github-code-like" "data.tokenizer=$TOK" data.max_tokens=2e7 sweep.name=cpu-code)
# The two datasets run side by side, one thread each: tiny models are bound by per-step overhead, so two
# single-threaded sweeps finish well before two two-threaded ones in turn (and do not oversubscribe 2 cores).
run_dataset() {
    local ds=$1; shift
    for refine in false true; do
        stamp "sweep $ds refine=$refine: $PY -m sweep +experiment=cpu_sweep $* launch.refine=$refine"
        local start=$SECONDS
        "$PY" -m sweep +experiment=cpu_sweep "$@" launch.refine=$refine >> "outputs/sweep-$ds.log" 2>&1
        stamp "sweep $ds refine=$refine took $((SECONDS - start)) s"
    done
}
mkdir -p outputs
# prepare each dataset once, before the two sweeps start in parallel (a dry run prepares and plans)
"$PY" -m sweep +experiment=cpu_sweep "${prose[@]}" launch.dry_run=true > /dev/null
"$PY" -m sweep +experiment=cpu_sweep "${code[@]}" launch.dry_run=true > /dev/null
run_dataset prose "${prose[@]}" &
run_dataset code "${code[@]}" &
wait %1 && wait %2

# Headline fit: Approach 2 through the budgets whose isoFLOP minimum lies inside the sizes run (the smallest
# budgets' minima fall below the smallest model a 2048-token vocab allows); then all budgets, and
# non-embedding N (Pearce & Song 2024), for comparison.
A=("$PY" -m analysis prose=outputs/cpu-prose code=outputs/cpu-code --project 5.76e23 1e14 --bootstrap 1000)
stamp "analysis: ${A[*]} --inside-grid-only --out $OUT"
"${A[@]}" --inside-grid-only --out "$OUT" | tee "$OUT/summary.txt"
mkdir -p "$OUT/all_budgets" "$OUT/non_embedding"
stamp "analysis: ${A[*]} --out $OUT/all_budgets"
"${A[@]}" --out "$OUT/all_budgets" | tee "$OUT/all_budgets/summary.txt"
stamp "analysis: ${A[*]} --inside-grid-only --params non_embedding --out $OUT/non_embedding"
"${A[@]}" --inside-grid-only --params non_embedding --out "$OUT/non_embedding" | tee "$OUT/non_embedding/summary.txt"
for ds in prose code; do  # progress bars end their lines with \r
    tr '\r' '\n' < "outputs/sweep-$ds.log" | grep -a "sweep efficiency" | sed "s/^/$ds: /"
done > "$OUT/efficiency.txt" || true
for ds in prose code; do
    "$PY" -m sweep.status "outputs/cpu-$ds" > "$OUT/status-$ds.txt"
    cp "outputs/cpu-$ds/plan.json" "$OUT/plan-$ds.json"
done
# the hand-written reading of the results (benchmarks/cpu_sweep/reading.md) heads the generated report
if [ -f "$OUT/reading.md" ]; then
    { cat "$OUT/reading.md"; echo; echo "---"; echo; cat "$OUT/report.md"; } > "$OUT/report.md.tmp" && mv "$OUT/report.md.tmp" "$OUT/report.md"
fi
stamp "done"
