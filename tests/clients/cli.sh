#!/usr/bin/env bash
# Runs `aws sts get-caller-identity` with the AWS CLI given, through its default credential
# chain, and prints one JSON line: {"client":"awscli","version":...,"major":1|2,"account":...,
# "arn":...,"endpoint":"native"|"flag"}. On failure prints {"error": ...} and exits 2.
#
# Usage: tests/clients/cli.sh [AWS_BINARY] [--loop N --interval S] [--keep-going]
#   AWS_BINARY defaults to $AWS_CLI, else .cache/venv/bin/aws (CLI v1 from PyPI).
#   Debian's CLI v2 is /usr/bin/aws.
#
# STS endpoint: AWS_ENDPOINT_URL_STS is honoured natively by CLI v1 >= 1.29 and v2 >= 2.13
# ("service-specific endpoints"). Older CLIs (Debian bookworm's v2 is 2.9.19) ignore it, so
# for them the value is passed as --endpoint-url.
# Region: CLI v1 (botocore) reads AWS_DEFAULT_REGION, not AWS_REGION; v2 reads both. When
# only AWS_REGION is set it is copied to AWS_DEFAULT_REGION here.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
fail() { printf '{"error": %s, "client": "awscli"}\n' "$(json_str "$*")"; exit 2; }

cli="${AWS_CLI:-$root/.cache/venv/bin/aws}"
if [[ $# -gt 0 && $1 != --* ]]; then cli=$1; shift; fi
count=1 interval=1 looping=0 keep_going=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --loop) count=${2:?--loop needs a value}; looping=1; shift 2 ;;
    --interval) interval=${2:?--interval needs a value}; shift 2 ;;
    --keep-going) keep_going=1; shift ;;
    *) fail "usage: unknown argument $1; cli.sh [AWS_BINARY] [--loop N --interval S] [--keep-going]" ;;
  esac
done
[[ -x $cli ]] || cli_path=$(command -v "$cli" 2>/dev/null) || fail "AWS CLI not found: $cli"
cli=${cli_path:-$cli}

export AWS_PAGER=""
if [[ -z ${AWS_DEFAULT_REGION:-} && -n ${AWS_REGION:-} ]]; then export AWS_DEFAULT_REGION=$AWS_REGION; fi

version_line=$("$cli" --version 2>&1 | head -n1) || fail "cannot run $cli --version: $version_line"
# e.g. "aws-cli/1.46.3 Python/3.11.2 ..." or "aws-cli/2.9.19 Python/3.11.2 ..."
version=$(sed -n 's|^aws-cli/\([0-9.]*\).*|\1|p' <<<"$version_line")
[[ -n $version ]] || fail "unrecognised version output from $cli: $version_line"
IFS=. read -r major minor _ <<<"$version"

endpoint_args=() endpoint_mode=native
if [[ -n ${AWS_ENDPOINT_URL_STS:-} ]]; then
  if { [[ $major == 1 ]] && ((minor < 29)); } || { [[ $major == 2 ]] && ((minor < 13)); }; then
    endpoint_args=(--endpoint-url "$AWS_ENDPOINT_URL_STS")
    endpoint_mode=flag
  fi
fi

failed=0
for ((i = 0; i < count; i++)); do
  ((i > 0)) && sleep "$interval"
  out=$("$cli" sts get-caller-identity --output json "${endpoint_args[@]}" 2>&1)
  rc=$?
  line=$(CLI_OUT="$out" CLI_RC=$rc python3 - "$version" "$major" "$endpoint_mode" "$looping" "$i" <<'PY'
import datetime, json, os, sys
version, major, endpoint, looping, i = sys.argv[1:]
out, rc = os.environ["CLI_OUT"], int(os.environ["CLI_RC"])
line = None
if rc == 0:
    try:
        ident = json.loads(out)
        line = {"client": "awscli", "version": version, "major": int(major),
                "account": ident["Account"], "arn": ident["Arn"], "endpoint": endpoint}
    except Exception as exc:
        out = "unparseable output (%s): %s" % (exc, out)
if line is None:
    line = {"error": out.strip() or ("exit code %d" % rc), "client": "awscli", "version": version}
if looping == "1":
    now = datetime.datetime.now(datetime.timezone.utc)
    line["ts"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)
    line["i"] = int(i)
print(json.dumps(line), flush=True)
sys.exit(0 if "error" not in line else 2)
PY
  )
  lrc=$?
  printf '%s\n' "$line"
  if ((lrc != 0)); then
    failed=1
    ((keep_going)) || exit 2
  fi
done
((failed)) && exit 2
exit 0
