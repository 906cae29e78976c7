#!/usr/bin/env python3
"""Smoke-test the local services with the env printed by scripts/services.sh.

Postgres: `SELECT 1` through psql on $DATABASE_URL.
SQS (moto): create a throwaway queue, send, receive, delete, drop the queue.
Exits non-zero with a message naming what failed. Run it with the venv's
python (it needs boto3, which moto brings): `make services-check`.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid


def fail(msg: str) -> None:
    print(f"[check] FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check_postgres() -> None:
    url = os.environ.get("DATABASE_URL") or fail("DATABASE_URL is not set")
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    out = subprocess.run(
        [psql, "-X", "-tA", url, "-c", "select 1"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if out.returncode != 0 or out.stdout.strip() != "1":
        fail(f"psql select 1: {out.stderr.strip() or out.stdout.strip()}")
    print(f"[check] postgres ok: {url}", file=sys.stderr)


def check_sqs() -> None:
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or fail("AWS_ENDPOINT_URL_SQS is not set")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))
    name = f"sundial-check-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        body = f"hello {name}"
        sqs.send_message(QueueUrl=url, MessageBody=body)
        deadline = time.monotonic() + 10
        got = []
        while not got and time.monotonic() < deadline:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages", [])
        if not got or got[0]["Body"] != body:
            fail(f"sqs round trip: sent {body!r}, received {got!r}")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    finally:
        sqs.delete_queue(QueueUrl=url)
    print(f"[check] sqs ok: {endpoint} (create/send/receive/delete)", file=sys.stderr)


if __name__ == "__main__":
    check_postgres()
    if "--pg-only" not in sys.argv:
        check_sqs()
