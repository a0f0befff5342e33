# Sourced by .ci/run. Downloads through the CI machine's network are sometimes cut mid-file (the CI
# run of stop 24: pyarrow stopped at 29.9 of 55.0 MB six times, and five tox environments failed
# before any test ran). So installs are tried up to three times, and tests run once: a failing
# test is never retried. tests/test_front_door.py plants both faults against these functions.

# installed COMMAND...: run an install command, up to three tries, CI_RETRY_PAUSE_S (30) apart.
installed() {
    local attempt
    for attempt in 1 2 3; do
        "$@" && return 0
        if [ "$attempt" -lt 3 ]; then
            echo "== install failed (try $attempt of 3), again in ${CI_RETRY_PAUSE_S:-30} s: $*" >&2
            sleep "${CI_RETRY_PAUSE_S:-30}"
        fi
    done
    echo "== install failed 3 times: $*" >&2
    return 1
}

# tox_run TOX-ARGS...: build the environments (tox --notest, retried), then run them once.
tox_run() {
    installed "$TOX_BIN" "$@" --notest && "$TOX_BIN" "$@"
}
