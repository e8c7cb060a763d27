"""Checks on template.yaml that cfn-lint and `sam validate` cannot make: what the deploy
review (shared/reviews/aws-deploy-review.md, F1-F18) found, on the template as CloudFormation
will see it.

The template is read with cfn-lint's decoder (it keeps CloudFormation's tags: `!Ref` is
{"Ref": ...}), conditions and `Fn::If` are evaluated for given parameter values, and the SAM
transform runs offline (aws-sam-translator, the one cfn-lint and the SAM CLI use), so the
checks see the resources SAM generates (the EventInvokeConfig, the rules, the roles).

Run by the test command: `.venv/bin/python infra/template_test.py [template.yaml]`. Exits 1
with every failed check listed.
"""

import copy
import json
import os
import sys
import tomllib

from cfnlint.decode import decode
from samtranslator.translator.transform import transform

NO_VALUE = object()


class Template:
    def __init__(self, path):
        tpl, matches = decode(path)
        if matches:
            raise SystemExit(f"{path}: {matches}")
        self.raw = tpl

    def params(self, **overrides):
        values = {}
        for name, p in self.raw["Parameters"].items():
            if "Default" in p:
                values[name] = str(p["Default"])
        values.update(
            {
                "AgentImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/agent:1",
                "VpcId": "vpc-1",
                "Subnets": "subnet-1,subnet-2",
                "JwtKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt",
                "JwtIssuer": "https://issuer.example",
                "JwtAudience": "switchboard",
            }
        )
        values.update({k: str(v) for k, v in overrides.items()})
        return values

    def conditions(self, params):
        conds = {}
        for name, expr in self.raw["Conditions"].items():
            conds[name] = evaluate(expr, params, conds, self.raw["Conditions"])
        return conds

    def resolved(self, **overrides):
        """(parameters, resources) with conditions and Fn::If resolved."""
        params, tpl = self.resolved_template(**overrides)
        return params, tpl["Resources"]

    def resolved_template(self, **overrides):
        """The template with conditions and Fn::If resolved for these parameters, as the
        AWS::LanguageExtensions transform resolves them (DeletionPolicy included)."""
        params = self.params(**overrides)
        conds = self.conditions(params)
        tpl = copy.deepcopy(self.raw)
        tpl["Transform"] = [t for t in listify(tpl["Transform"]) if t != "AWS::LanguageExtensions"]
        tpl["Resources"] = {
            name: resolve_ifs(res, params, conds)
            for name, res in tpl["Resources"].items()
            if "Condition" not in res or conds[res["Condition"]]
        }
        return params, tpl

    def transformed(self, **overrides):
        params, tpl = self.resolved_template(**overrides)
        for res in tpl["Resources"].values():
            if res["Type"] == "AWS::Serverless::Function":
                res["Properties"]["CodeUri"] = "s3://bucket/key"

        class Policies:
            def load(self):
                return {}

        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        out = transform(tpl, params, Policies())
        return params, out["Resources"]

    def rule_holds(self, rule, **overrides):
        params = self.params(**overrides)
        conds = self.conditions(params)
        r = self.raw["Rules"][rule]
        if "RuleCondition" in r and not evaluate(r["RuleCondition"], params, conds, {}):
            return True
        return all(evaluate(a["Assert"], params, conds, {}) for a in r["Assertions"])


def listify(v):
    return v if isinstance(v, list) else [v]


def evaluate(expr, params, conds, all_conds):
    if isinstance(expr, (str, int, float, bool)):
        return expr if not isinstance(expr, (int, float)) or isinstance(expr, bool) else str(expr)
    if isinstance(expr, list):
        return [evaluate(e, params, conds, all_conds) for e in expr]
    (fn, arg), = expr.items()
    ev = lambda e: evaluate(e, params, conds, all_conds)
    if fn == "Ref":
        return params[arg]
    if fn == "Condition":
        if arg not in conds:
            conds[arg] = evaluate(all_conds[arg], params, conds, all_conds)
        return conds[arg]
    if fn == "Fn::Equals":
        a, b = (str(ev(x)) for x in arg)
        return a == b
    if fn == "Fn::Not":
        return not ev(arg[0])
    if fn == "Fn::And":
        return all(ev(x) for x in arg)
    if fn == "Fn::Or":
        return any(ev(x) for x in arg)
    if fn == "Fn::Contains":
        return str(ev(arg[1])) in [str(x) for x in ev(arg[0])]
    if fn == "Fn::Split":
        return str(ev(arg[1])).split(arg[0])
    if fn == "Fn::Select":
        return ev(arg[1])[int(arg[0])]
    if fn == "Fn::Sub" and isinstance(arg, str):
        out = arg
        for name, value in params.items():
            out = out.replace("${" + name + "}", str(value))
        return out
    raise ValueError(f"cannot evaluate {fn}")


def resolve_ifs(node, params, conds):
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            chosen = yes if conds[name] else no
            return resolve_ifs(chosen, params, conds)
        if node == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        out = {}
        for k, v in node.items():
            r = resolve_ifs(v, params, conds)
            if r is not NO_VALUE:
                out[k] = r
        return out
    if isinstance(node, list):
        return [r for r in (resolve_ifs(v, params, conds) for v in node) if r is not NO_VALUE]
    return node


failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def statements(role_res):
    for policy in role_res["Properties"].get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            yield st


def main(path):
    t = Template(path)

    # F1: no reserved concurrency unless asked for.
    _, res = t.resolved()
    for fn in ("ApiFunction", "ReaperFunction"):
        check(
            "ReservedConcurrentExecutions" not in res[fn]["Properties"],
            f"F1 {fn} reserves no concurrency by default",
        )
    _, res = t.resolved(ApiReservedConcurrency=20, ReaperReservedConcurrency=2)
    check(
        res["ApiFunction"]["Properties"].get("ReservedConcurrentExecutions") == "20"
        or res["ApiFunction"]["Properties"].get("ReservedConcurrentExecutions") == {"Ref": "ApiReservedConcurrency"},
        "F1 ApiReservedConcurrency=20 reserves 20",
    )
    check(
        res["ReaperFunction"]["Properties"].get("ReservedConcurrentExecutions")
        == {"Ref": "ReaperReservedConcurrency"},
        "F1 ReaperReservedConcurrency=2 reserves 2",
    )

    # The local ECS (local-ecs/src/event.rs) filters its events with the reaper rule's
    # pattern from infra/events/task-stopped-pattern.json: it must be the template's.
    _, res = t.resolved()
    pattern = res["ReaperFunction"]["Properties"]["Events"]["TaskStopped"]["Properties"]["Pattern"]
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "events", "task-stopped-pattern.json")
    with open(here) as f:
        local = json.load(f)
    local["detail"]["clusterArn"] = [{"Fn::GetAtt": ["AgentCluster", "Arn"]}]
    check(pattern == local, "the local ECS's event pattern is the TaskStopped rule's")

    # F5: failed reaper invocations are kept, and every queue and the reaper's errors alarm.
    topic = "arn:aws:sns:us-east-1:123456789012:ops"
    for overrides in ({}, {"AlarmTopicArn": topic}):
        _, res = t.transformed(**overrides)
        eic = [r for r in res.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
        reaper_eic = [
            r for r in eic if r["Properties"]["FunctionName"] == {"Ref": "ReaperFunction"}
        ]
        on_failure = (
            reaper_eic[0]["Properties"].get("DestinationConfig", {}).get("OnFailure", {})
            if reaper_eic
            else {}
        )
        check(
            bool(on_failure.get("Destination")),
            f"F5 the reaper's failed invocations go to an on-failure destination {overrides}",
        )
        queues = [n for n, r in res.items() if r["Type"] == "AWS::SQS::Queue"]
        alarms = [r["Properties"] for r in res.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
        check(len(queues) >= 3, f"F5 three dead-letter queues ({queues})")
        for q in queues:
            watched = [
                a
                for a in alarms
                if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
                and {"Name": "QueueName", "Value": {"Fn::GetAtt": [q, "QueueName"]}}
                in a.get("Dimensions", [])
            ]
            check(len(watched) == 1, f"F5 queue {q} has an alarm {overrides}")
        check(
            any(
                a.get("MetricName") == "Errors"
                and {"Name": "FunctionName", "Value": {"Ref": "ReaperFunction"}} in a["Dimensions"]
                for a in alarms
            ),
            f"F5 the reaper's Errors have an alarm {overrides}",
        )
        for a in alarms:
            want = [{"Ref": "AlarmTopicArn"}] if overrides else None
            check(
                a.get("AlarmActions") == want,
                f"F5 alarm {a['AlarmDescription'][:40]!r} notifies {want}",
            )
        # The reaper's role may send to its on-failure queue (SAM adds the grant).
        role = res["ReaperFunctionRole"]
        check(
            any("sqs:SendMessage" in listify(st["Action"]) for st in statements(role)),
            "F5 the reaper's role may write its on-failure queue",
        )
        # EventBridge may write each rule's dead-letter queue.
        policies = [r for r in res.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
        for rule in [n for n, r in res.items() if r["Type"] == "AWS::Events::Rule"]:
            dlq = res[rule]["Properties"]["Targets"][0].get("DeadLetterConfig", {}).get("Arn")
            check(dlq is not None, f"F5 rule {rule} has a dead-letter queue")
            allowed = any(
                st["Resource"] == dlq
                and st["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": [rule, "Arn"]}
                for p in policies
                for st in p["Properties"]["PolicyDocument"]["Statement"]
            )
            check(allowed, f"F5 EventBridge may send {rule}'s dead letters")

    # F7: an init process forwards SIGTERM.
    _, res = t.resolved()
    container = res["AgentTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    check(
        container.get("LinuxParameters", {}).get("InitProcessEnabled") is True,
        "F7 InitProcessEnabled on the agent container",
    )
    # F8: the stop timeout leaves room for the drain.
    check(int(t.raw["Parameters"]["AgentStopTimeout"]["MinValue"]) >= 15, "F8 AgentStopTimeout >= 15")
    # F18: logs never block the agent.
    opts = container["LogConfiguration"]["Options"]
    check(opts.get("mode") == "non-blocking" and "max-buffer-size" in opts, "F18 awslogs non-blocking")

    api_env = res["ApiFunction"]["Properties"]["Environment"]["Variables"]
    reaper_env = res["ReaperFunction"]["Properties"]["Environment"]["Variables"]
    # F12: no cross-origin access unless set.
    check("CORS_ALLOW_ORIGINS" not in api_env, "F12 no CORS origins by default")
    _, res2 = t.resolved(CorsAllowOrigins="https://app.example")
    check(
        res2["ApiFunction"]["Properties"]["Environment"]["Variables"].get("CORS_ALLOW_ORIGINS")
        == {"Ref": "CorsAllowOrigins"},
        "F12 CorsAllowOrigins reaches the function",
    )
    # F13: issuer and audience are required with public keys.
    check(not t.rule_holds("JwtAudienceWithPublicKeys", JwtAudience=""), "F13 RS256 needs JwtAudience")
    check(not t.rule_holds("JwtAudienceWithPublicKeys", JwtIssuer=""), "F13 RS256 needs JwtIssuer")
    check(
        t.rule_holds("JwtAudienceWithPublicKeys", JwtAlgorithm="HS256", JwtIssuer="", JwtAudience=""),
        "F13 HS256 (a shared secret) needs neither",
    )
    # F14: the secret grant matches the ARN as pasted, with or without its suffix.
    api_statements = {
        st.get("Sid"): st for st in res["ApiFunction"]["Properties"]["Policies"][0]["Statement"]
    }
    check(
        api_statements["ReadJwtKey"]["Resource"]
        == [{"Ref": "JwtKeySecretArn"}, {"Fn::Sub": "${JwtKeySecretArn}-??????"}],
        "F14 GetSecretValue on the full ARN, or the partial one and its random suffix only",
    )
    # JWKS: exactly one source of keys; a key set is public keys; no secret grant without one.
    jwks = "https://idp.example/.well-known/jwks.json"
    check(not t.rule_holds("OneSourceOfJwtKeys", JwtJwksUrl=jwks), "JWKS and a secret: refused")
    check(
        not t.rule_holds("OneSourceOfJwtKeys", JwtKeySecretArn=""), "no source of keys: refused"
    )
    check(
        t.rule_holds("OneSourceOfJwtKeys", JwtJwksUrl=jwks, JwtKeySecretArn=""),
        "a JWKS URL alone is one source",
    )
    check(
        not t.rule_holds("JwksNeedsPublicKeys", JwtJwksUrl=jwks, JwtAlgorithm="HS256"),
        "a JWKS URL with HS256: refused",
    )
    _, res_jwks = t.resolved(JwtJwksUrl=jwks, JwtKeySecretArn="")
    jwks_env = res_jwks["ApiFunction"]["Properties"]["Environment"]["Variables"]
    jwks_sids = {
        st.get("Sid") for st in res_jwks["ApiFunction"]["Properties"]["Policies"][0]["Statement"]
    }
    check(
        jwks_env.get("AUTH_JWT_JWKS_URL") == {"Ref": "JwtJwksUrl"}
        and "AUTH_JWT_KEY_SECRET_ID" not in jwks_env
        and "ReadJwtKey" not in jwks_sids,
        "with a JWKS URL: the function reads it, and has no secret or secret grant",
    )
    # F15: the table is retained and protected by default, not for dev stacks.
    _, res = t.resolved()
    table = res["SessionsTable"]
    check(
        table.get("DeletionPolicy") == "Retain"
        and table.get("UpdateReplacePolicy") == "Retain"
        and table["Properties"].get("DeletionProtectionEnabled") is True,
        "F15 the table is retained and deletion-protected by default",
    )
    _, res = t.resolved(ProtectTable="false")
    table = res["SessionsTable"]
    check(
        table.get("DeletionPolicy") == "Delete"
        and table["Properties"].get("DeletionProtectionEnabled") is False,
        "F15 ProtectTable=false for dev stacks",
    )
    check(
        "AWS::LanguageExtensions" in listify(t.raw["Transform"]),
        "F15 the conditional DeletionPolicy has the LanguageExtensions transform",
    )
    # F16: sam build runs without a prompt.
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), "samconfig.toml"), "rb") as f:
        samconfig = tomllib.load(f)
    check(
        samconfig["default"]["build"]["parameters"].get("beta_features") is True,
        "F16 samconfig.toml opts sam build into the cargo-lambda beta",
    )
    # F18: RunTask on the family, ECS_CLUSTER as the ARN.
    check(
        api_statements["RunAgentTasks"]["Resource"]
        == {
            "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task-definition/${AWS::StackName}-agent:*"
        },
        "F18 RunTask on every revision of the family",
    )
    family = t.raw["Resources"]["AgentTaskDefinition"]["Properties"]["Family"]
    check(family == {"Fn::Sub": "${AWS::StackName}-agent"}, "F18 the grant's family is the definition's")
    for env, fn in ((api_env, "api"), (reaper_env, "reaper")):
        check(
            env["ECS_CLUSTER"] == {"Fn::GetAtt": ["AgentCluster", "Arn"]},
            f"F18 the {fn} function's ECS_CLUSTER is the cluster ARN",
        )
    # #20: the warm pool costs nothing unless asked; the reaper starts standbys (and
    # re-dispatches sessions) exactly as the api starts agents.
    check(t.raw["Parameters"]["WarmPoolSize"]["Default"] == 0, "#20 WarmPoolSize defaults to 0")
    same = [
        "TASK_DEFINITION",
        "SUBNETS",
        "SECURITY_GROUPS",
        "ASSIGN_PUBLIC_IP",
        "CAPACITY_PROVIDERS",
        "WARM_POOL_SIZE",
        "START_DEADLINE_SECONDS",
    ] + sorted(k for k in api_env if k.startswith("SWITCHBOARD_"))
    differs = [k for k in same if api_env.get(k) != reaper_env.get(k)]
    check(not differs, f"#20 the reaper starts tasks with the api's settings {differs}")
    check(api_env["WARM_POOL_SIZE"] == {"Ref": "WarmPoolSize"}, "#20 WarmPoolSize reaches the api")
    check(t.rule_holds("FargateCpuMemory"), "F18 the default CPU/memory pair is valid")
    for cpu, mem, ok in (
        ("256", "512", True),
        ("256", "4096", False),
        ("512", "1024", True),
        ("1024", "1024", False),
        ("4096", "30720", True),
        ("2048", "30720", False),
    ):
        check(
            t.rule_holds("FargateCpuMemory", AgentCpu=cpu, AgentMemory=mem) == ok,
            f"F18 Fargate {cpu} CPU with {mem} MiB is {'valid' if ok else 'refused'}",
        )

    # #22: session events. The stream carries old and new images; the events function's
    # mapping passes only state changes, with the patterns the local stack's mapping uses.
    _, res = t.resolved()
    spec = res["SessionsTable"]["Properties"].get("StreamSpecification", {})
    check(spec.get("StreamViewType") == "NEW_AND_OLD_IMAGES", "#22 the table streams new and old images")
    mapping = res["EventsFunction"]["Properties"]["Events"]["SessionChanges"]["Properties"]
    patterns = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "events", "stream-filters.json")
    with open(here) as f:
        check(patterns == json.load(f), "#22 the stream filters are infra/events/stream-filters.json")
    check(mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], "#22 the stream reports partial failures")
    check("OnFailure" in mapping.get("DestinationConfig", {}), "#22 a stream batch failing its retries is kept")
    check("WebhookFunction" not in res and "WebhookQueue" not in res, "#22 no webhook resources without WebhookUrl")
    check(
        not t.rule_holds("WebhookNeedsSecret", WebhookUrl="https://hooks.example/in"),
        "#22 WebhookUrl without WebhookSecretArn is refused",
    )
    hooks = {"WebhookUrl": "https://hooks.example/in", "WebhookSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hook"}
    _, res = t.resolved(**hooks)
    queue = res["WebhookQueue"]["Properties"]
    check(queue.get("FifoQueue") is True and queue.get("ContentBasedDeduplication") is False,
          "#22 the webhook queue is FIFO, deduplicated by the event id")
    check(queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "WebhookMaxReceives"}, "#22 webhooks are given up after WebhookMaxReceives")
    check(int(queue["VisibilityTimeout"]) >= int(res["WebhookFunction"]["Properties"]["Timeout"]),
          "#22 the queue's visibility timeout covers the function's timeout")
    wh = res["WebhookFunction"]["Properties"]["Events"]["Webhooks"]["Properties"]
    check(wh["FunctionResponseTypes"] == ["ReportBatchItemFailures"], "#22 webhook batches report partial failures")
    check(
        res["EventsFunction"]["Properties"]["Environment"]["Variables"].get("WEBHOOK_QUEUE_URL") == {"Ref": "WebhookQueue"},
        "#22 the events function queues webhooks when WebhookUrl is set",
    )
    # Every dead-letter queue has an alarm on it (the webhook queue itself is not one).
    for overrides in ({}, hooks):
        _, res = t.resolved(**overrides)
        watched = {
            d["Value"]["Fn::GetAtt"][0]
            for r in res.values()
            if r["Type"] == "AWS::CloudWatch::Alarm"
            for d in r["Properties"].get("Dimensions", [])
            if d["Name"] == "QueueName" and isinstance(d["Value"], dict) and "Fn::GetAtt" in d["Value"]
        }
        queues = {n for n, r in res.items() if r["Type"] == "AWS::SQS::Queue" and n != "WebhookQueue"}
        check(queues <= watched, f"#22 every dead-letter queue has an alarm {sorted(queues - watched)}")
    _, res = t.resolved(WarmPoolSize=2)
    check("WarmPoolEmptyAlarm" in res, "#22 with a warm pool, an alarm when it is empty")
    _, res = t.resolved()
    check("WarmPoolEmptyAlarm" not in res, "#22 without a warm pool, no pool alarm")
    for name in ("Api5xxRateAlarm", "StartFailuresAlarm", "ConcurrencyNearLimitAlarm", "EventsLagAlarm", "FleetDashboard"):
        check(name in res, f"#22 {name}")
    body = res["FleetDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    rendered = body
    for key in ("Ns", "Max"):
        rendered = rendered.replace("${" + key + "}", "1")
    for key in ("AWS::Region", "HttpApi", "EventsFunction"):
        rendered = rendered.replace("${" + key + "}", "x")
    try:
        json.loads(rendered)
        check(True, "#22 the dashboard body is JSON")
    except ValueError as e:
        check(False, f"#22 the dashboard body is JSON: {e}")
    ns = {"Fn::Sub": "Switchboard/${AWS::StackName}"}
    for fn in ("ApiFunction", "ReaperFunction", "EventsFunction"):
        check(res[fn]["Properties"]["Environment"]["Variables"].get("METRICS_NAMESPACE") == ns, f"#22 {fn} writes EMF in the stack's namespace")

    # #23: process agents get their close grace, and their memory limit only when set.
    def agent_env(**params):
        _, r = t.resolved(**params)
        container = r["AgentTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        return {e["Name"]: e["Value"] for e in container["Environment"]}
    env = agent_env()
    check(env.get("SWITCHBOARD_AGENT_CLOSE_GRACE_SECONDS") == {"Ref": "AgentCloseGraceSeconds"}, "#23 the close grace reaches the agent task")
    check("SWITCHBOARD_AGENT_MEMORY_LIMIT_MB" not in env, "#23 no memory limit by default")
    env = agent_env(AgentMemoryLimitMb="900")
    check(env.get("SWITCHBOARD_AGENT_MEMORY_LIMIT_MB") == {"Ref": "AgentMemoryLimitMb"}, "#23 AgentMemoryLimitMb reaches the agent task")
    container = t.raw["Resources"]["AgentTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    check(container["Command"] == ["task"], "#23 one command, task, for agent binaries and process-agent images")
    grace_max = int(t.raw["Parameters"]["AgentCloseGraceSeconds"]["MaxValue"])
    stop_max = int(t.raw["Parameters"]["AgentStopTimeout"]["MaxValue"])
    check(grace_max + 5 + 10 <= stop_max, "#23 the longest close grace fits the longest stop timeout")

    if failures:
        print(f"\n{len(failures)} template check(s) failed", file=sys.stderr)
        return 1
    print("\nall template checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
