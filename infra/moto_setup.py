"""Prepares a running moto server for Switchboard and prints a default-VPC subnet id.

- Pins moto's ECS task state: tasks stay RUNNING until StopTask (by default moto advances a
  task one step on every DescribeTasks).
- moto's RunTask with awsvpc needs an existing subnet (a default-VPC one: a new VPC without
  DNS hostnames fails) and any security group id.

Usage:
  python infra/moto_setup.py ENDPOINT                  prints the subnet id
  python infra/moto_setup.py ENDPOINT --cluster NAME   also creates the cluster and the agent
                                                       task definition (as template.yaml
                                                       declares them) and prints shell
                                                       assignments: SUBNET=, TASK_DEFINITION=
"""

import json
import sys
import urllib.error
import urllib.request

import boto3


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def main() -> None:
    endpoint = sys.argv[1]
    body = json.dumps(
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000}}
    ).encode()
    request = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition", data=body, method="POST"
    )
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as e:
        # Another emulator (EMULATOR=external): it keeps its own task states.
        print(f"moto_setup: {endpoint} is not moto ({e.code}); task states left as they are",
              file=sys.stderr)
    ec2 = client("ec2", endpoint)
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    subnet = sorted(s["SubnetId"] for s in subnets["Subnets"])[0]
    if len(sys.argv) < 4 or sys.argv[2] != "--cluster":
        print(subnet)
        return
    cluster = sys.argv[3]
    ecs = client("ecs", endpoint)
    ecs.create_cluster(clusterName=cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"])
    definition = ecs.register_task_definition(
        family=f"{cluster}-agent",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="512",
        memory="1024",
        containerDefinitions=[
            {
                "name": "agent",
                "image": "switchboard-agent:local",
                "essential": True,
                "command": ["task"],
                # moto needs container-level memory (task-level alone fails RunTask).
                "memory": 1024,
                "stopTimeout": 30,
                # As template.yaml's AgentTaskDefinition.
                "environment": [
                    {"name": "SWITCHBOARD_LOG_FORMAT", "value": "json"},
                    {"name": "RUST_LOG", "value": "info"},
                ],
            }
        ],
    )
    print(f"SUBNET={subnet}")
    print(f"TASK_DEFINITION={definition['taskDefinition']['taskDefinitionArn']}")


if __name__ == "__main__":
    main()
