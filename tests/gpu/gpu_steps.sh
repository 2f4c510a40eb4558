# SPDX-License-Identifier: MIT
# gpu_steps.sh - what the GPU scripts share (tests/gpu/run-on-gpu.sh,
# tests/gpu/fuzz-on-gpu.sh, python/run-on-gpu.sh; pack-built.sh takes
# the list of programs), sourced by each: the GPU test programs, the
# summary table printed last, the configure script of a git checkout,
# configure's architecture flag, and the four compute-sanitizer tools
# over one program.
# The caller sets $src (the source tree) and $out (the log folder), and
# may set $step_timeout (seconds a step may take, default 600).

# The GPU-only programs of tests/gpu (built on demand, never by a plain
# make) that run-on-gpu.sh runs; pack-built.sh packs them, and
# graph_bench beside them for bench-on-gpu.sh.
gpu_test_programs="diff_cuda graph_replay sanitize_cases caller_memory \
late_blocks error_chain"

# cuda_arch_flag ARCH: configure's --with-cuda-arch for the scripts'
# MOES_CUDA_ARCH, where "auto" means every architecture nvcc supports
# ("all"), the same in each script.
cuda_arch_flag() {
    if [ "$1" = auto ]; then
        echo "--with-cuda-arch=all"
    else
        echo "--with-cuda-arch=$1"
    fi
}

summary=""
steps_started=$(date +%s)

# add LABEL VALUE: one line of the summary table, ending with the
# seconds from the start to the moment it was added, so that the time
# each step took (the difference from the line before, for steps run one
# after another) is in the table, where a short GPU session looks first.
add() {
    summary="$summary$(printf '%-36s %s [%d s]' "$1" "$2" \
                           $(($(date +%s) - steps_started)))
"
}

# print_summary TITLE: the table, then where the logs are.
print_summary() {
    echo
    echo "==================== $1 ===================="
    printf '%s' "$summary"
    echo "[N s]: seconds from the start when the line was written"
    echo "logs: $out"
}

# ensure_configure TITLE: a git checkout has no configure script until
# autogen.sh has run. When it cannot run, the summary TITLE says so (the
# reason is in autogen.log) and the script exits with status 1.
ensure_configure() {
    [ -x "$src/configure" ] && return 0
    (cd "$src" && ./autogen.sh) >"$out/autogen.log" 2>&1 && return 0
    add "build" "FAILED (autogen.sh, see autogen.log)"
    print_summary "$1"
    exit 1
}

# run_sanitizers LABEL LOG PICK PROGRAM [ARGS...]: runs PROGRAM under
# compute-sanitizer memcheck (with leak checking), racecheck, synccheck
# and initcheck, the four at once (each its own process and context, so
# none sees another's work; together they take the slowest one's time),
# adds a line "compute-sanitizer TOOL LABEL" per tool with its summary
# (and, when PICK is not empty, the last line that the sed script PICK
# prints from the output), and appends the four logs to $out/LOG.
# Returns 1 when any tool failed.
run_sanitizers() {
    label=$1 log=$2 pick=$3
    shift 3
    sanitizer=$(command -v compute-sanitizer ||
                echo /usr/local/cuda/bin/compute-sanitizer)
    failed=0
    rm -f "$out/$log"
    for tool in memcheck racecheck synccheck initcheck; do
        extra=""
        [ $tool = memcheck ] && extra="--leak-check full"
        # shellcheck disable=SC2086
        timeout "${step_timeout:-600}" "$sanitizer" --tool $tool $extra \
            --error-exitcode 99 "$@" >"$out/sanitizer-$tool.log" 2>&1 &
        eval "sanitizer_pid_$tool=\$!"
    done
    for tool in memcheck racecheck synccheck initcheck; do
        eval "wait \$sanitizer_pid_$tool"
        rc=$?
        tool_log="$out/sanitizer-$tool.log"
        # racecheck ends with its own summary line.
        errors=$(grep -a -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$tool_log" |
                 tail -1 | sed 's/.* SUMMARY: //')
        line="${errors:-no summary}"
        if [ -n "$pick" ]; then
            picked=$(sed -n "$pick" "$tool_log" | tail -1)
            line="$line; ${picked:-?}"
        fi
        add "compute-sanitizer $tool$label" "$line (exit $rc)"
        [ $rc -eq 0 ] || failed=1
        { echo "######## $tool (exit $rc)"; cat "$tool_log"; } >>"$out/$log"
        rm -f "$tool_log"
    done
    return $failed
}
