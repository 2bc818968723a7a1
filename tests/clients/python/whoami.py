#!/usr/bin/env python3
"""boto3 default-chain client for credport's compatibility tests.

Resolves credentials through boto3's default chain (no explicit credentials) and calls
STS GetCallerIdentity, printing one JSON line per call:

    {"client": "boto3", "version": ..., "botocore": ..., "account": ..., "arn": ...,
     "access_key_id_suffix": "ABCD"}

Flags:
    --loop N --interval S   N calls, S seconds apart, on ONE session/client (so botocore's own
                            refresh logic is exercised); each line gets "ts" and "i".
    --mode creds-only       no STS call: print the access key suffix and expiry of
                            session.get_credentials() (frozen, i.e. after any due refresh).
    --keep-going            in a loop, go on after an error (exit 2 at the end).

On error prints {"error": "..."} and exits 2.

STS endpoint: botocore honours AWS_ENDPOINT_URL_STS natively since 1.31.x (the
"configured endpoint URLs" feature; botocore 1.32.0 has it). For an older botocore without
it, the value is passed as endpoint_url explicitly.
"""
import argparse
import datetime
import json
import os
import sys
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def utc_now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def fmt_expiry(expiry):
    if expiry is None:
        return None
    if expiry.tzinfo is not None:
        expiry = expiry.astimezone(datetime.timezone.utc)
    return expiry.strftime("%Y-%m-%dT%H:%M:%SZ")


def signing_key_suffix(client):
    """Suffix of the access key the client's signer holds, i.e. the one that signed the last
    request. Reads the private attribute on purpose: the public `access_key` property and
    get_frozen_credentials() would trigger botocore's refresh logic (an extra fetch when the
    credentials expire within 15 minutes) and skew refresh tests."""
    creds = client._request_signer._credentials
    if creds is None:
        return None
    key = getattr(creds, "_access_key", None) or creds.access_key
    return key[-4:]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        emit({"error": "usage: %s" % message, "client": "boto3"})
        sys.exit(2)


def main():
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["sts", "creds-only"], default="sts")
    parser.add_argument("--loop", type=int, default=None, metavar="N")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S")
    parser.add_argument("--keep-going", action="store_true")
    args = parser.parse_args()

    looping = args.loop is not None
    count = args.loop if looping else 1

    try:
        import boto3
        import botocore
        import botocore.configprovider

        base = {"client": "boto3", "version": boto3.__version__, "botocore": botocore.__version__}
        # botocore reads AWS_DEFAULT_REGION (and the config file), NOT AWS_REGION; fall back to
        # AWS_REGION so that an environment set up for the JS/Rust SDKs works here too.
        region = None
        if not os.environ.get("AWS_DEFAULT_REGION") and os.environ.get("AWS_REGION"):
            region = os.environ["AWS_REGION"]
        session = boto3.session.Session(region_name=region)
        client = None
        if args.mode == "sts":
            kwargs = {}
            native = "ignore_configured_endpoint_urls" in getattr(
                botocore.configprovider, "BOTOCORE_DEFAUT_SESSION_VARIABLES", {}
            )
            if not native and os.environ.get("AWS_ENDPOINT_URL_STS"):
                kwargs["endpoint_url"] = os.environ["AWS_ENDPOINT_URL_STS"]
            client = session.client("sts", **kwargs)
    except Exception as exc:  # noqa: BLE001 - report anything as a JSON error line
        emit({"error": "%s: %s" % (type(exc).__name__, exc), "client": "boto3"})
        return 2

    failed = False
    for i in range(count):
        if i:
            time.sleep(args.interval)
        line = dict(base)
        try:
            if args.mode == "creds-only":
                creds = session.get_credentials()
                if creds is None:
                    raise RuntimeError("Unable to locate credentials")
                frozen = creds.get_frozen_credentials()
                line["access_key_id_suffix"] = frozen.access_key[-4:]
                line["expiry"] = fmt_expiry(getattr(creds, "_expiry_time", None))
                line["method"] = getattr(creds, "method", None)
            else:
                ident = client.get_caller_identity()
                line["account"] = ident["Account"]
                line["arn"] = ident["Arn"]
                line["access_key_id_suffix"] = signing_key_suffix(client)
        except Exception as exc:  # noqa: BLE001
            line = {"error": "%s: %s" % (type(exc).__name__, exc), "client": "boto3"}
            failed = True
        if looping:
            line["ts"] = utc_now()
            line["i"] = i
        emit(line)
        if failed and not args.keep_going:
            return 2
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
