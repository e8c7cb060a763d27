#!/usr/bin/env python3
"""The local stack's Lambda event source mappings (infra/serverless-local.sh), as
template.yaml declares them on AWS:

- the sessions table's stream → the `events` function: batches of up to 100 records of the
  shard, in order, filtered by infra/events/stream-filters.json (the mapping's
  FilterCriteria); a partial batch failure retries from the failed record (with a doubling
  backoff up to 30 s, where Lambda retries at once) until it succeeds, as the template's
  MaximumRetryAttempts -1 does; EVENTS_MAX_RETRIES=N gives up after N retries and writes
  the batch to $LOGS/events-on-failure.jsonl, as the mapping's on-failure destination would;
- the webhook FIFO queue → the `webhooks` function: one message at a time (the template's
  BatchSize 1); one it reports failed stays for the queue's visibility timeout (SQS's retry)
  and is then made visible again here, the others are deleted;
  moto moves a message past maxReceiveCount to the dead-letter queue.

Each function is invoked through `cargo lambda watch`'s invoke endpoint. One JSON line per
batch on stdout.

Usage: local_event_sources.py --endpoint MOTO --lambda-url URL --table TABLE
       [--webhook-queue-url URL] [--logs DIR] [--ready-file FILE]
"""

import argparse
import json
import os
import pathlib
import sys
import threading
import time
import urllib.request

import boto3

parser = argparse.ArgumentParser()
parser.add_argument("--endpoint", required=True)
parser.add_argument("--lambda-url", required=True)
parser.add_argument("--table", required=True)
parser.add_argument("--webhook-queue-url")
parser.add_argument("--logs", default="target/local-stack")
parser.add_argument("--ready-file")
args = parser.parse_args()

MAX_RETRIES = int(os.environ.get("EVENTS_MAX_RETRIES", "-1"))
FILTERS = json.loads((pathlib.Path(__file__).parent / "events" / "stream-filters.json").read_text())
region = os.environ.get("AWS_REGION", "us-east-1")
session = boto3.session.Session(region_name=region)
client = lambda name: session.client(name, endpoint_url=args.endpoint)


def log(**fields):
    sys.stdout.write(json.dumps({"time": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def matches(pattern, value):
    """EventBridge-style matching, the subset the filters use: nested objects, lists of
    literals or {"prefix": ...}."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(matches(p, value.get(k)) for k, p in pattern.items())
    return any(
        (isinstance(item, dict) and isinstance(value, str) and value.startswith(item["prefix"]))
        or item == value
        for item in pattern
    )


def invoke(function, payload):
    request = urllib.request.Request(
        f"{args.lambda_url}/2015-03-31/functions/{function}/invocations",
        data=json.dumps(payload, default=str).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read() or b"{}")


def lambda_record(record, stream_arn):
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        change["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }


def stream_mapping():
    dynamodb, streams = client("dynamodb"), client("dynamodbstreams")
    stream_arn = dynamodb.describe_table(TableName=args.table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    failures = pathlib.Path(args.logs) / "events-on-failure.jsonl"
    while True:
        out = streams.get_records(ShardIterator=iterator, Limit=100)
        iterator = out["NextShardIterator"]
        batch = [lambda_record(r, stream_arn) for r in out["Records"]]
        batch = [r for r in batch if any(matches(f, r) for f in FILTERS)]
        attempt, backoff = 0, 0.5
        while batch:
            try:
                answer = invoke("events", {"Records": batch})
                failed = [f["itemIdentifier"] for f in answer.get("batchItemFailures", [])]
            except Exception as e:  # the function failed as a whole: the whole batch again
                log(mapping="stream", error=str(e))
                failed = [batch[0]["dynamodb"]["SequenceNumber"]]
            if not failed:
                log(mapping="stream", records=len(batch), attempt=attempt + 1)
                break
            first = min(failed, key=int)
            batch = [r for r in batch if int(r["dynamodb"]["SequenceNumber"]) >= int(first)]
            attempt += 1
            if 0 <= MAX_RETRIES < attempt:
                log(mapping="stream", on_failure=len(batch), first=first)
                with failures.open("a") as f:
                    f.write(json.dumps({"records": batch}, default=str) + "\n")
                break
            log(mapping="stream", retry=attempt, first=first, in_seconds=backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)
        if not out["Records"]:
            time.sleep(0.2)


def queue_mapping(url):
    sqs = client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "VisibilityTimeout"])["Attributes"]
    arn, visibility = attributes["QueueArn"], int(attributes["VisibilityTimeout"])

    def release(handles):
        # moto hands a group's in-flight messages back out of order when several time out
        # together (each one seen visible again releases the group for the next); SQS keeps
        # their order. So the failed ones are made visible again here, in order, when their
        # visibility timeout would end.
        for handle in handles:
            try:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
            except Exception as e:
                log(mapping="webhooks", release_error=str(e))

    while True:
        # Short polls: moto (infra/moto_server.py) serves one request at a time, and a long
        # poll would hold every other call of the stack for its wait.
        out = sqs.receive_message(
            QueueUrl=url,
            # One at a time, as the template's BatchSize 1 (and one in flight per group).
            MaxNumberOfMessages=1,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
        )
        messages = out.get("Messages", [])
        if not messages:
            time.sleep(0.2)
            continue
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": region,
            }
            for m in messages
        ]
        try:
            answer = invoke("webhooks", {"Records": records})
            failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        except Exception as e:
            log(mapping="webhooks", error=str(e))
            failed = {r["messageId"] for r in records}
        done = [r for r in records if r["messageId"] not in failed]
        for r in done:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=r["receiptHandle"])
        retry = [r["receiptHandle"] for r in records if r["messageId"] in failed]
        if retry:
            timer = threading.Timer(max(visibility - 0.2, 0), release, [retry])
            timer.daemon = True
            timer.start()
        log(mapping="webhooks", messages=len(records), delivered=len(done), failed=len(failed))


def run(target, *a):
    def forever():
        while True:
            try:
                target(*a)
            except Exception as e:  # the emulator is gone or restarting: try again
                log(mapping=target.__name__, error=str(e))
                time.sleep(1)

    threading.Thread(target=forever, daemon=True).start()


run(stream_mapping)
if args.webhook_queue_url:
    run(queue_mapping, args.webhook_queue_url)
if args.ready_file:
    pathlib.Path(args.ready_file).write_text("ready\n")
log(started=True, webhooks=bool(args.webhook_queue_url))
threading.Event().wait()
