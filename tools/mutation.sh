#!/usr/bin/env bash
# Mutation testing of the core modules, each against its own fast tests (not part of CI).
#
#   pip install -e '.[dev]'                 # mutmut 2.x
#   bash tools/mutation.sh                  # every module below, one after the other
#   bash tools/mutation.sh dp packing       # some of them
#   MUTATION_BUDGET=900 bash tools/mutation.sh table   # seconds per module (default 1800)
#
# mutmut edits files in place, so each module runs in a fresh copy of the working tree
# (tracked and untracked files) under $MUTATION_DIR (default /tmp/fewbit-mutation); a module
# that hits its time budget reports what it tried. Prints, per module: mutants tried, killed
# (a test failed or the mutant timed out), survivors; the survivors' diffs go to
# $MUTATION_DIR/<module>/survivors.txt.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${MUTATION_DIR:-/tmp/fewbit-mutation}
budget=${MUTATION_BUDGET:-1800}
py=${PYTHON:-python}

# module -> source file, and the fast tests that guard it (pytest arguments). dp.py runs with
# NUMBA_DISABLE_JIT=1: every mutant would otherwise recompile its kernels (~20 s each).
declare -A SRC TESTS ENVS
SRC[dp]=fewbit_design/dp.py
TESTS[dp]="tests/test_dp.py tests/test_claims_dp.py -k 'not quadratic_dp and (cut_positions or step_function or equals or fooled or mutant)'"
ENVS[dp]="env NUMBA_DISABLE_JIT=1"
SRC[refine]=fewbit_design/refine.py
TESTS[refine]="tests/test_design.py tests/test_claims_dp.py -k 'meet_midpoint_condition and not eight or lloyd_max_fixed_point and (tanh or gelu) or mutant_refine'"
SRC[levelset]=fewbit_design/levelset.py
TESTS[levelset]="tests/test_claims_dp.py tests/test_design.py -k 'binned or exact or relu or lloyd_max_fixed_point and (tanh or gelu)'"
SRC[table]=fewbit_design/table.py;          TESTS[table]="tests/test_formats.py tests/test_claims_readme.py"
SRC[formats]=fewbit_design/formats.py
TESTS[formats]="tests/test_formats.py tests/test_header_c.py tests/test_claims_readme.py -k 'not header_lookup or gelu3ls-c99 or one-c99'"
SRC[packing]=fewbit_design/torch/packing.py; TESTS[packing]="tests/test_torch_packing.py tests/test_claims_torch.py"
SRC[functional]=fewbit_design/torch/functional.py; TESTS[functional]="tests/test_torch_functional.py tests/test_claims_torch.py"
ORDER=(dp refine levelset table formats packing functional)

mods=("$@"); [ ${#mods[@]} -eq 0 ] && mods=("${ORDER[@]}")
mkdir -p "$out"
for m in "${mods[@]}"; do
    [ -n "${SRC[$m]:-}" ] || { echo "unknown module '$m'; choose from ${ORDER[*]}" >&2; exit 2; }
    dir="$out/$m"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dir")
    start=$(date +%s)
    (cd "$dir" && PYTHONPATH="$dir" timeout "$budget" "$py" -m mutmut run --paths-to-mutate "${SRC[$m]}" \
        --runner "${ENVS[$m]:-} $py -m pytest -x -q -p no:cacheprovider ${TESTS[$m]}" \
        --tests-dir tests --no-progress --simple-output > "$dir/mutmut.log" 2>&1)
    rc=$?
    (cd "$dir" && "$py" -m mutmut show all > "$dir/survivors.txt" 2>&1)
    secs=$(( $(date +%s) - start ))
    "$py" - "$dir/.mutmut-cache" "$m" "$secs" "$rc" <<'PY'
import sqlite3, sys
db, mod, secs, rc = sys.argv[1:]
rows = sqlite3.connect(db).execute("select status, count(*) from Mutant group by status").fetchall()
n = dict(rows)
tried = sum(v for k, v in n.items() if k != "untested")
killed = n.get("ok_killed", 0) + n.get("bad_timeout", 0)
surv = n.get("bad_survived", 0) + n.get("ok_suspicious", 0)
print(f"{mod:<11} tried {tried:4d}  killed {killed:4d}  survived {surv:3d}  "
      f"untried {n.get('untested', 0):4d}  ({secs} s{', budget hit' if rc == '124' else ''})")
PY
done
