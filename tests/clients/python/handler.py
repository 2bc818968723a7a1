"""Serverless Framework (v3) Python handler for credport's compatibility tests.

`serverless invoke local -f hello` runs it as a child process with the same environment, so
boto3's default credential chain sees the container-credentials variables that credport set.
The STS endpoint comes from AWS_ENDPOINT_URL_STS (botocore honours it natively).
"""
import json
import os

import boto3


def hello(event, context):
    # botocore reads AWS_DEFAULT_REGION, not AWS_REGION.
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    ident = boto3.client("sts", region_name=region).get_caller_identity()
    result = {
        "client": "boto3-serverless",
        "version": boto3.__version__,
        "account": ident["Account"],
        "arn": ident["Arn"],
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    # Started directly, as an editor's "run this file" does (`python handler.py`).
    hello({}, None)
