"""Creates the webhook path's resources in the emulator as template.yaml declares them on
AWS, and prints shell assignments for the functions' settings:

- the signing secret (Secrets Manager), its value read from WEBHOOK_SECRET (whsec_...);
- the dead-letter FIFO queue and the webhook FIFO queue (redrive after maxReceiveCount),
  whose visibility timeout is the delay before a failed delivery is retried.

Usage: WEBHOOK_SECRET=whsec_... python infra/webhook_setup.py ENDPOINT NAME VISIBILITY MAX_RECEIVES
Prints: WEBHOOK_QUEUE_URL=, WEBHOOK_DLQ_URL=, WEBHOOK_SECRET_ARN=
"""

import json
import os
import sys

import boto3


def main() -> None:
    endpoint, name, visibility, max_receives = sys.argv[1:5]
    kw = dict(endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))
    sqs, secrets = boto3.client("sqs", **kw), boto3.client("secretsmanager", **kw)
    secret = secrets.create_secret(Name=f"{name}-webhook-secret", SecretString=os.environ["WEBHOOK_SECRET"])
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    dlq = sqs.create_queue(QueueName=f"{name}-webhook-dlq.fifo", Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"{name}-webhooks.fifo",
        Attributes={
            **fifo,
            "VisibilityTimeout": visibility,
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": int(max_receives)}),
        },
    )["QueueUrl"]
    print(f"WEBHOOK_QUEUE_URL={queue}")
    print(f"WEBHOOK_DLQ_URL={dlq}")
    print(f"WEBHOOK_SECRET_ARN={secret['ARN']}")


if __name__ == "__main__":
    main()
