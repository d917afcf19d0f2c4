#!/usr/bin/env bash
# Reproduce benchmarks/cpu_sweep/ with one command (`make cpu-sweep`): the CPU isoFLOP study on prose (c4-like) and
# code (github-code-like) from ../shared/corpora, with conf/experiment/cpu_sweep.yaml's design: the tiny preset
# (byte-level tokens), 4 budgets over 1.5 decades, WSD trunks with cooldown forks, 3 seeds at the 3 central sizes,
# and the forward validation (3 sizes at 3x the top budget); the fits are also made on the issue's 2-seed design,
# the same runs less the third seed's (two_seeds/).  Each dataset trains at its own fitted recipe
# (conf/recipe/tiny_prose.yaml, tiny_code.yaml: scripts/bench_lr_scan.py, run once and committed; this script does
# not rerun them).  The two sweeps run side by side, one thread each; then the joint fit, the --holdout-top
# self-check, figures and the report.  Every step is resumable: rerunning after a kill picks up where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CORPORA=${CORPORA:-data_cache/corpora}  # the LR scans' data settings (scripts/bench_lr_scan.py): keep them equal
OUT=${OUT:-benchmarks/cpu_sweep}
export HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-disabled}
for ds in prose code; do
    if [ ! -f "conf/recipe/tiny_$ds.yaml" ]; then
        echo "error: conf/recipe/tiny_$ds.yaml is missing; fit it once with: $PY scripts/bench_lr_scan.py --datasets $ds" >&2
        exit 2
    fi
done
mkdir -p "$OUT" outputs
LOG="$OUT/commands.log"
stamp() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [ ! -d "$CORPORA/c4-like" ] || [ ! -d "$CORPORA/github-code-like" ]; then
    stamp "building corpora into $CORPORA"
    "$PY" ../shared/corpora/build.py --out "$CORPORA"
fi

prose=(data=c4 "data.path=$CORPORA/c4-like" data.max_tokens=6e7 recipe=tiny_prose sweep.name=cpu-prose)
code=(data=github_code "data.path=$CORPORA/github-code-like" data.max_tokens=6e7 recipe=tiny_code sweep.name=cpu-code)
run_dataset() {
    local ds=$1; shift
    stamp "sweep $ds: $PY -m sweep +experiment=cpu_sweep $*"
    local start=$SECONDS
    "$PY" -m sweep +experiment=cpu_sweep "$@" trainer.progress=false >> "outputs/sweep-$ds.log" 2>&1
    stamp "sweep $ds took $((SECONDS - start)) s"
}
# prepare each dataset once, before the two sweeps start in parallel (a dry run prepares and plans)
"$PY" -m sweep +experiment=cpu_sweep "${prose[@]}" launch.dry_run=true > "outputs/plan-prose.txt"
"$PY" -m sweep +experiment=cpu_sweep "${code[@]}" launch.dry_run=true > "outputs/plan-code.txt"
start=$SECONDS
run_dataset prose "${prose[@]}" &
run_dataset code "${code[@]}" &
wait %1 && wait %2
stamp "both sweeps (grid and validation runs) took $((SECONDS - start)) s"

FIT=(--project 5.76e23 1e14 --bootstrap 1000)  # the fits' options, the same for every analysis below
A=("$PY" -m analysis prose=outputs/cpu-prose code=outputs/cpu-code "${FIT[@]}")
stamp "analysis: ${A[*]} --out $OUT"
"${A[@]}" --out "$OUT" | tee "$OUT/summary.txt"
stamp "analysis: ${A[*]} --holdout-top --out $OUT/holdout_top"
mkdir -p "$OUT/holdout_top"
"${A[@]}" --holdout-top --out "$OUT/holdout_top" | tee "$OUT/holdout_top/summary.txt"
# the issue's design (2 seeds at the central sizes) out of the same runs: the third and later seeds' run dirs left out
S=()
for ds in prose code; do
    sub="outputs/cpu-$ds-2seeds"
    rm -rf "$sub" && mkdir -p "$sub"
    for r in "outputs/cpu-$ds"/*/; do
        case "$(basename "$r")" in *-s[2-9] | *-s[2-9]-trunk) ;; *) ln -s "$(realpath "$r")" "$sub/" ;; esac
    done
    S+=("$ds=$sub")
done
A2=("$PY" -m analysis "${S[@]}" "${FIT[@]}")
stamp "analysis, 2 seeds: ${A2[*]} --out $OUT/two_seeds"
mkdir -p "$OUT/two_seeds"
"${A2[@]}" --out "$OUT/two_seeds" | tee "$OUT/two_seeds/summary.txt"
for ds in prose code; do  # progress bars end their lines with \r
    tr '\r' '\n' < "outputs/sweep-$ds.log" | grep -a "sweep efficiency\|forks:" | sed "s/^/$ds: /"
done > "$OUT/efficiency.txt" || true
for ds in prose code; do
    "$PY" -m sweep.status "outputs/cpu-$ds" > "$OUT/status-$ds.txt"
    cp "outputs/cpu-$ds/plan.json" "$OUT/plan-$ds.json"
    cp "outputs/plan-$ds.txt" "$OUT/plan-$ds.txt"
done
# the hand-written reading of the results (benchmarks/cpu_sweep/reading.md) heads the generated report
if [ -f "$OUT/reading.md" ]; then
    { cat "$OUT/reading.md"; echo; echo "---"; echo; cat "$OUT/report.md"; } > "$OUT/report.md.tmp" && mv "$OUT/report.md.tmp" "$OUT/report.md"
fi
stamp "done"
