"""Least privilege, measured: each role of template.yaml grants exactly the AWS calls its
binary makes (the api, reaper, events and webhooks functions, the agent task).

"Makes" is what `switchboard_aws::calls::CallRecorder` recorded while the test command ran
the tests (SWITCHBOARD_RECORD_AWS_CALLS): the api function's router and secret read, the
reaper's sweep and event handler, the agent task's process. Each recorded operation becomes
the IAM actions it needs (a transaction needs its item actions, a tagged RunTask needs
TagResource and PassRole); each role's policies in the template (read with cfn-lint's
decoder, which keeps CloudFormation's tags) must grant exactly those:

- an action recorded but not granted is an AccessDenied on AWS;
- an action granted but never recorded is more than the binary needs, or a path no test
  covers: both are failures (cover it, or drop the grant);
- a role that reads no index must not be granted the `live` index.

Statements SAM adds for the platform itself (Lambda writing to the on-failure queue) are not
in the template's Policies and not checked here: our binaries never make those calls.

Usage: .venv/bin/python infra/iam_test.py template.yaml target/aws-calls
"""

import json
import pathlib
import sys

from cfnlint.decode import decode

ROLES = {
    "ApiFunction": lambda r: r["Properties"]["Policies"],
    "ReaperFunction": lambda r: r["Properties"]["Policies"],
    "AgentTaskRole": lambda r: [p["PolicyDocument"] for p in r["Properties"]["Policies"]],
    "EventsFunction": lambda r: r["Properties"]["Policies"],
    "WebhookFunction": lambda r: r["Properties"]["Policies"],
}

SERVICE = {
    "DynamoDB": "dynamodb",
    "ECS": "ecs",
    "Secrets Manager": "secretsmanager",
    "EventBridge": "events",
    "SQS": "sqs",
}
# Batch operations authorized as their single form.
BATCHED = {("sqs", "SendMessageBatch"): "sqs:SendMessage"}
TX_ITEM = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def actions_of(call):
    service = SERVICE.get(call["service"])
    if service is None:
        raise SystemExit(f"a call to an unknown service: {call}")
    op = call["operation"]
    if (service, op) == ("dynamodb", "TransactWriteItems"):
        return {TX_ITEM[k] for k in call.get("items", [])}
    if (service, op) == ("dynamodb", "TransactGetItems"):
        return {"dynamodb:GetItem"}
    if (service, op) == ("ecs", "RunTask"):
        # The task definition's roles are passed to ECS; tags at launch need TagResource.
        out = {"ecs:RunTask", "iam:PassRole"}
        if call.get("tags"):
            out.add("ecs:TagResource")
        return out
    if (service, op) in BATCHED:
        return {BATCHED[(service, op)]}
    return {f"{service}:{op}"}


def granted(template, role):
    actions, resources = set(), []
    for doc in ROLES[role](template["Resources"][role]):
        for st in doc["Statement"]:
            # A conditional statement (the secret's grant exists only with a secret) counts
            # as granted: some deployment has it.
            if isinstance(st, dict) and set(st) == {"Fn::If"}:
                branches = [b for b in st["Fn::If"][1:] if b != {"Ref": "AWS::NoValue"}]
                if not branches:
                    continue
                st = branches[0]
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            actions.update(a for a in acts if a != "sts:AssumeRole")
            res = st.get("Resource", [])
            resources.extend(res if isinstance(res, list) else [res])
    return actions, resources


def main(template_path, calls_dir):
    template, matches = decode(template_path)
    if matches:
        raise SystemExit(f"{template_path}: {matches}")
    recorded = {role: [] for role in ROLES}
    files = sorted(pathlib.Path(calls_dir).glob("*.jsonl"))
    for f in files:
        for number, line in enumerate(f.read_text().splitlines(), 1):
            try:
                call = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{f}:{number}: not one recorded call ({e}): {line[:120]!r}")
            recorded.setdefault(call["role"], []).append(call)
    failures = []
    for role in ROLES:
        calls = recorded[role]
        used = set().union(*(actions_of(c) for c in calls)) if calls else set()
        grants, resources = granted(template, role)
        wildcards = sorted(a for a in grants if "*" in a)
        missing = sorted(used - grants)
        unused = sorted(grants - used)
        reads_index = any(c.get("index") for c in calls)
        index_granted = any(
            isinstance(r, dict) and "index/live" in json.dumps(r) for r in resources
        )
        ops = sorted({f"{c['service']}:{c['operation']}" for c in calls})
        print(f"{role}: {len(calls)} calls recorded ({', '.join(ops) or 'none'})")
        print(f"  needs   {sorted(used)}")
        print(f"  granted {sorted(grants)}")
        if not calls:
            failures.append(f"{role}: no calls recorded (were the tests run with SWITCHBOARD_RECORD_AWS_CALLS?)")
        if missing:
            failures.append(f"{role}: calls without a grant (AccessDenied on AWS): {missing}")
        if unused:
            failures.append(f"{role}: grants no recorded call needs: {unused}")
        if wildcards:
            failures.append(f"{role}: wildcard actions: {wildcards}")
        if index_granted and not reads_index:
            failures.append(f"{role}: the live index is granted but never read")
        if reads_index and not index_granted:
            failures.append(f"{role}: reads the live index without a grant on it")
    if failures:
        print("\n" + "\n".join("FAIL " + f for f in failures), file=sys.stderr)
        return 1
    print(f"\neach role grants exactly what its binary calls ({len(files)} recordings)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
