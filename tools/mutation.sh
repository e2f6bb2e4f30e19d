#!/usr/bin/env bash
# Mutation testing of the core modules, each against its own fast tests (not part of CI).
#
#   pip install -e '.[dev]'                 # mutmut 3
#   bash tools/mutation.sh                  # every module below, one after the other
#   bash tools/mutation.sh dp packing       # some of them
#   MUTATION_BUDGET=900 bash tools/mutation.sh table   # seconds per module (default 1800)
#   MUTATION_REPORT_ONLY=1 bash tools/mutation.sh dp    # summarise an earlier run again
#
# Each module runs in a fresh copy of the working tree (tracked and untracked files) under
# $MUTATION_DIR (default /tmp/fewbit-mutation)/<module>; mutmut runs there with the module as
# its only target and pytest limited to the module's tests (below), on $MUTATION_JOBS
# processes (default 2). mutmut skips decorated functions, so dp.py's numba kernels are
# mutated as plain Python: the copy drops their decorators and the tests run with
# NUMBA_DISABLE_JIT=1 (refine.py's one kernel, a tridiagonal solve, loses its decorator too;
# the DP kernels it does not own stay compiled). Prints one line per module: mutants, killed (a test failed or the
# mutant timed out), survived, not checked (budget), and writes the survivors' diffs to
# <module>/survivors.txt. torch/functional runs through tools/mutation_subprocess.py instead
# of `mutmut run` (mutmut generates the mutants; torch, Triton and numba are imported once,
# and each mutant runs in a child forked from that clean parent, as torch in mutmut's own
# forked children did not finish).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${MUTATION_DIR:-/tmp/fewbit-mutation}
budget=${MUTATION_BUDGET:-1800}
jobs=${MUTATION_JOBS:-2}
py=${PYTHON:-python}

# module -> source file, test files, and a pytest -k expression that keeps the run fast
declare -A SRC TESTS SELECT
SRC[dp]=fewbit_design/dp.py
TESTS[dp]="tests/test_dp.py"
SELECT[dp]="not quadratic_dp and (cut_positions or step_function or equals or fooled or mutant or optimal_runs)"
SRC[refine]=fewbit_design/refine.py
TESTS[refine]="tests/test_refine.py"
SELECT[refine]=""
SRC[levelset]=fewbit_design/levelset.py
TESTS[levelset]="tests/test_levelset.py tests/test_dp.py tests/test_refine.py"
SELECT[levelset]="levelset or relu_on_samples or mutant_binned or designs_refine"
SRC[table]=fewbit_design/table.py
TESTS[table]="tests/test_formats.py tests/test_table.py tests/test_readme.py"
SELECT[table]="not (test_formats.py and mutant) and not pages_have_examples and not python_example_runs"   # no claims of formats; test_readme.py's claims only
SRC[formats]="fewbit_design/formats/*"    # the package: mutmut's only_mutate takes a glob
TESTS[formats]="tests/test_formats.py tests/test_header_c.py"
SELECT[formats]="not header_lookup or zeros-c99 or one-c99"
SRC[packing]=fewbit_design/torch/packing.py
TESTS[packing]="tests/test_torch_packing.py"
SELECT[packing]=""
SRC[functional]=fewbit_design/torch/functional.py
TESTS[functional]="tests/test_torch_functional.py"
# its claims (fewbit_activation's contract on small hand tables): fast enough to run once per mutant
SELECT[functional]="forward_and_gradient_exact_in_every_dtype or without_numba_the_torch_path or create_graph_gradient_exact or saves_exactly_the_packed_codes or no_gradient_needed_nothing_coded or export_warns or bad_input_messages or fused_branch_through_the_interpreter or torch_func_transforms"
PRELOAD_functional=fewbit_design.torch.cpu:warm_up   # imported once; each mutant a fork
ORDER=(dp refine levelset table formats packing functional)

report() {   # summary line and survivors' diffs of module $1 (uses $dir, $secs, $rc)
    local envs=(); [ "$1" = dp ] && envs=(NUMBA_DISABLE_JIT=1)
    (cd "$dir" && env "${envs[@]}" "$py" -m mutmut export-cicd-stats > /dev/null 2>&1
     "$py" -m mutmut results > "$dir/results.txt" 2>&1
     for name in $(grep -E ': survived' "$dir/results.txt" | sed -E 's/^ *([^:]+):.*/\1/'); do
         "$py" -m mutmut show "$name"; echo; done > "$dir/survivors.txt" 2>&1)
    "$py" - "$dir/mutants/mutmut-cicd-stats.json" "$1" "$secs" "$rc" <<'PY'
import json, sys
path, mod, secs, rc = sys.argv[1:]
try:
    s = json.load(open(path))
except OSError:
    print(f"{mod:<11} no results ({secs} s); see its mutmut.log"); sys.exit()
killed = s["killed"] + s["timeout"] + s["segfault"]
done = killed + s["survived"] + s["suspicious"] + s["no_tests"] + s["skipped"]
print(f"{mod:<11} mutants {s['total']:4d}  killed {killed:4d}  survived {s['survived']:3d}  "
      f"no tests {s['no_tests']:3d}  not checked {s['total'] - done:4d}  "
      f"({secs} s{', budget hit' if rc == '124' else ''})")
PY

}

mods=("$@"); [ ${#mods[@]} -eq 0 ] && mods=("${ORDER[@]}")
mkdir -p "$out"
for m in "${mods[@]}"; do
    [ -n "${SRC[$m]:-}" ] || { echo "unknown module '$m'; choose from ${ORDER[*]}" >&2; exit 2; }
    dir="$out/$m"
    if [ -n "${MUTATION_REPORT_ONLY:-}" ]; then secs=0; rc=0; report "$m"; continue; fi
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dir")
    {
        printf '\n[mutmut]\nsource_paths = fewbit_design/\nonly_mutate = %s\n' "${SRC[$m]}"
        printf 'pytest_add_cli_args_test_selection =\n'; for t in ${TESTS[$m]}; do printf '    %s\n' "$t"; done
        printf 'also_copy =\n    README.md\n    tables/\n'
        printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n'
        [ -n "${SELECT[$m]}" ] && printf '    -k\n    %s\n' "${SELECT[$m]}"
    } >> "$dir/setup.cfg"
    envs=()
    if [ "$m" = dp ]; then
        sed -i -E '/^@(numba\.njit|kernel)/d' "$dir/${SRC[$m]}"
        envs=(NUMBA_DISABLE_JIT=1)
    elif [ "$m" = refine ]; then   # its one kernel (the tridiagonal solve) runs as plain Python
        sed -i -E '/^@kernel/d' "$dir/${SRC[$m]}"
    fi
    start=$(date +%s)
    if [ "$m" = functional ]; then   # torch under mutmut's fork hangs: our runner forks a warm parent
        sel=(); [ -n "${SELECT[$m]}" ] && sel=(-k "${SELECT[$m]}")
        (cd "$dir" && timeout "$budget" "$py" "$root/tools/mutation_subprocess.py" --jobs "$jobs" \
            --preload "$PRELOAD_functional" "${sel[@]}" ${TESTS[$m]} > "$dir/mutmut.log" 2>&1)
    else
        (cd "$dir" && env "${envs[@]}" timeout "$budget" "$py" -m mutmut run \
            --max-children "$jobs" > "$dir/mutmut.log" 2>&1)
    fi
    rc=$?
    secs=$(( $(date +%s) - start ))
    report "$m"
done
