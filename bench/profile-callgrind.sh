#!/usr/bin/env bash
# Profiles credport's hot credential fetch under callgrind (perf's hardware counters are not
# available on this VM: `perf stat -e instructions true` says <not supported>).
# Usage: bench/profile-callgrind.sh [BIN] [REQUESTS]   (default target/release/credport, 2000)
# Prints the top of callgrind_annotate (inclusive) and the instructions per request.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$(realpath "${1:-$root/target/release/credport}")
n=${2:-2000}
work=$(mktemp -d /tmp/credport-callgrind.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/.aws" "$work/.config/credport" "$work/.local/share" "$work/run"
chmod 700 "$work/run"
printf '[devAccount]\naws_access_key_id = ASIAEXAMPLEEXAMPLE00\naws_secret_access_key = %s\naws_session_token = %s\n' \
  "$(printf 's%.0s' {1..40})" "$(printf 'Q%.0s' {1..800})" >"$work/.aws/credentials"
printf '[projects.bench]\ndefault_stage = "dev"\nstages = { dev = "devAccount" }\n' >"$work/.config/credport/config.toml"
envs=(env -i PATH="$PATH" HOME="$work" XDG_CONFIG_HOME="$work/.config" XDG_DATA_HOME="$work/.local/share" CREDPORT_RUNTIME_DIR="$work/run")
token=$("${envs[@]}" "$bin" token --project bench --stage dev)
run() { # $1 = output file
  "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$1" "$bin" serve --listen 127.0.0.1:0 2>"$work/err" &
  pid=$!
  for _ in $(seq 600); do grep -q 'listening on' "$work/err" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's|.*listening on http://||p' "$work/err" | head -1)
  python3 - "$addr" "$token" "$2" <<'PY'
import http.client, sys
addr, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
h, p = addr.split(":")
c = http.client.HTTPConnection(h, int(p))
for _ in range(n):
    c.request("GET", "/v1/credentials/bench/dev", headers={"Authorization": token, "Host": addr})
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
PY
  kill -TERM "$pid"; wait "$pid" || true
}
# Two runs (10 requests, then N) so start-up is subtracted from the per-request cost.
run "$work/cg.small" 10
run "$work/cg.big" "$n"
small=$(sed -n 's/^summary: //p' "$work/cg.small" | cut -d' ' -f1)
big=$(sed -n 's/^summary: //p' "$work/cg.big" | cut -d' ' -f1)
echo "instructions: start-up + 10 requests $small; start-up + $n requests $big;"
echo "per request: $(( (big - small) / (n - 10) )) instructions"
mkdir -p "$root/.cache/bench"
cp "$work/cg.big" "$root/.cache/bench/callgrind.out.credport"
# (head closes the pipe early: not an error)
callgrind_annotate --inclusive=yes "$work/cg.big" 2>/dev/null | head -70 || true
