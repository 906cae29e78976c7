#!/usr/bin/env bash
# api-fuzz.sh — schemathesis against the admin API, driven by the OpenAPI
# document the API itself serves.
#
# Starts the real admin router (example `api_fuzz_server` of crate
# `sundial`: a throw-away database next to $DATABASE_URL, nothing is ever
# fired) on 127.0.0.1, then runs `schemathesis run` with every check on and
# every phase (examples, coverage, fuzzing, stateful). Fails on any server
# error, schema violation, undocumented status, valid request rejected or
# invalid request accepted.
#
# Usage: scripts/api-fuzz.sh            (expects the services env: DATABASE_URL)
#   API_FUZZ_EXAMPLES  examples per operation and phase (default 25)
#   API_FUZZ_SEED      hypothesis seed (default 4711; `random` for a new one)
#   API_FUZZ_ARGS      extra arguments for `schemathesis run`
# Config (what each check expects): scripts/schemathesis.toml.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
examples="${API_FUZZ_EXAMPLES:-25}"
seed="${API_FUZZ_SEED:-4711}"

die() { echo "api-fuzz: FAIL: $*" >&2; exit 1; }

[[ -n "${DATABASE_URL:-}" ]] || die "DATABASE_URL is not set (start the services: eval \"\$(make -s services)\")"

"$root/scripts/venv.sh" ensure requirements-dev.txt
st="$("$root/scripts/venv.sh" path)/schemathesis"
[[ -x "$st" ]] || die "schemathesis is not installed in the venv"

(cd "$root" && cargo build --quiet -p sundial --example api_fuzz_server) || die "cargo build failed"
bin="${CARGO_TARGET_DIR:-$root/target}/debug/examples/api_fuzz_server"

work="$(mktemp -d "${TMPDIR:-/tmp}/sundial-api-fuzz.XXXXXX")"
token="api-fuzz-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        # SIGTERM: the server drops its database on the way out.
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

SUNDIAL_ADMIN_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$bin" >"$work/server.out" 2>"$work/server.log" &
pid=$!
base=""
for _ in $(seq 300); do
    base="$(sed -n 's/^listening on //p' "$work/server.out")"
    [[ -n "$base" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; die "the fuzz server exited early"; }
    sleep 0.1
done
[[ -n "$base" ]] || die "the fuzz server did not start within 30 s"
case "$base" in http://127.0.0.1:*) ;; *) die "unexpected address: $base" ;; esac

if [[ "$seed" == "random" ]]; then
    seed="$RANDOM$RANDOM"
fi
echo "api-fuzz: $base, $examples examples per operation, seed $seed" >&2

start=$SECONDS
status=0
# shellcheck disable=SC2086
(cd "$work" && "$st" --config-file "$root/scripts/schemathesis.toml" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 2 \
    --request-timeout 20 \
    --generation-database none \
    --no-color \
    ${API_FUZZ_ARGS:-}) || status=$?
echo "api-fuzz: schemathesis took $((SECONDS - start)) s (exit $status)" >&2
if ((status != 0)); then
    echo "---- fuzz server log (last 40 lines) ----" >&2
    tail -n 40 "$work/server.log" >&2
    exit "$status"
fi
