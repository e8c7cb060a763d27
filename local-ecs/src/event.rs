//! ECS Task State Change events in the shape EventBridge delivers them, and the reaper rule's
//! event pattern (`infra/events/task-stopped-pattern.json`, which `infra/template_test.py`
//! checks equals the template's `TaskStopped` rule).

use serde_json::{Map, Value};

/// The `TaskStopped` rule's pattern, with `CLUSTER_ARN` where the template has
/// `!GetAtt AgentCluster.Arn`.
const PATTERN: &str = include_str!("../../infra/events/task-stopped-pattern.json");
/// A real STOPPED event, the base of every event built here (its attachments, platform and
/// version fields keep their real shape).
const FIXTURE: &str = include_str!("../../infra/events/ecs-task-state-change-stopped.json");
/// EventBridge's Scheduled Event, as the reaper's `rate(1 minute)` rule delivers it.
const SCHEDULE: &str = include_str!("../../infra/events/eventbridge-schedule.json");

/// The reaper rule's pattern for one cluster.
pub fn reaper_pattern(cluster_arn: &str) -> Value {
    let text = PATTERN.replace("CLUSTER_ARN", cluster_arn);
    serde_json::from_str(&text).expect("task-stopped-pattern.json is JSON")
}

/// Whether `event` matches an EventBridge event `pattern` (the subset the template uses:
/// nested objects and arrays of exact values; a pattern value of another form never matches).
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Some(fields) = pattern.as_object() else {
        return false;
    };
    fields.iter().all(|(key, want)| {
        let got = event.get(key).unwrap_or(&Value::Null);
        match want {
            Value::Object(_) => matches(want, got),
            Value::Array(allowed) => match got {
                // An array in the event matches when any of its values is allowed.
                Value::Array(values) => values.iter().any(|v| allowed.contains(v)),
                v => allowed.contains(v),
            },
            _ => false,
        }
    })
}

/// A Scheduled Event with a fresh id and time.
pub fn scheduled(rule_arn: &str) -> Value {
    let mut event: Value = serde_json::from_str(SCHEDULE).expect("the schedule fixture");
    event["id"] = Value::from(uuid::Uuid::now_v7().to_string());
    event["time"] = Value::from(now_rfc3339(false));
    event["resources"] = Value::from(vec![rule_arn.to_owned()]);
    event
}

/// What one event says about one task.
#[derive(Debug, Clone)]
pub struct TaskState<'a> {
    pub task: &'a crate::TaskInfo,
    /// `PROVISIONING`, `RUNNING` or `STOPPED`.
    pub last_status: &'static str,
    /// The container's exit code (128 + signal for a signal), once it exited.
    pub exit_code: Option<i32>,
    /// `stopCode` and `stoppedReason`, for `STOPPED`.
    pub stop: Option<(&'a str, &'a str)>,
    /// When the container started, once it did.
    pub started_at: Option<&'a str>,
    /// ECS's per-task event version (increases with every change).
    pub version: u64,
}

/// The ECS Task State Change event for `state`.
pub fn task_state_change(state: &TaskState<'_>) -> Value {
    let task = state.task;
    let mut event: Value = serde_json::from_str(FIXTURE).expect("the event fixture");
    let now = now_rfc3339(true);
    event["id"] = Value::from(uuid::Uuid::now_v7().to_string());
    event["time"] = Value::from(now_rfc3339(false));
    event["region"] = Value::from(task.region.as_str());
    event["account"] = Value::from(task.account.as_str());
    event["resources"] = Value::from(vec![task.arn.clone()]);
    let detail = event["detail"].as_object_mut().expect("detail");
    let set = |d: &mut Map<String, Value>, k: &str, v: Value| {
        d.insert(k.to_owned(), v);
    };
    set(detail, "taskArn", Value::from(task.arn.as_str()));
    set(detail, "clusterArn", Value::from(task.cluster_arn.as_str()));
    set(
        detail,
        "taskDefinitionArn",
        Value::from(task.definition_arn.as_str()),
    );
    set(detail, "group", Value::from(task.group.as_str()));
    set(detail, "startedBy", Value::from(task.started_by.as_str()));
    set(detail, "createdAt", Value::from(task.created_at.as_str()));
    set(detail, "updatedAt", Value::from(now.as_str()));
    set(detail, "lastStatus", Value::from(state.last_status));
    let stopped = state.last_status == "STOPPED";
    set(
        detail,
        "desiredStatus",
        Value::from(if state.stop.is_some() {
            "STOPPED"
        } else {
            "RUNNING"
        }),
    );
    set(detail, "version", Value::from(state.version));
    let env: Vec<Value> = task
        .override_env
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    set(
        detail,
        "overrides",
        serde_json::json!({ "containerOverrides": [
            { "name": task.container.as_str(), "environment": env }
        ] }),
    );
    let container = &mut detail["containers"][0];
    container["name"] = Value::from(task.container.as_str());
    container["taskArn"] = Value::from(task.arn.as_str());
    container["containerArn"] = Value::from(format!(
        "{}/{}",
        task.arn.replacen(":task/", ":container/", 1),
        task.container_id
    ));
    container["lastStatus"] = Value::from(state.last_status);
    match state.exit_code {
        Some(code) => container["exitCode"] = Value::from(code),
        None => {
            container
                .as_object_mut()
                .expect("container")
                .remove("exitCode");
        }
    }
    for key in [
        "stopCode",
        "stoppedReason",
        "stoppedAt",
        "stoppingAt",
        "executionStoppedAt",
        "startedAt",
        "pullStartedAt",
        "pullStoppedAt",
        "connectivityAt",
    ] {
        detail.remove(key);
    }
    if let Some(started) = state.started_at {
        set(detail, "startedAt", Value::from(started));
    }
    if let Some((code, reason)) = state.stop {
        set(detail, "stopCode", Value::from(code));
        set(detail, "stoppedReason", Value::from(reason));
        set(detail, "stoppingAt", Value::from(now.as_str()));
        if stopped {
            set(detail, "executionStoppedAt", Value::from(now.as_str()));
            set(detail, "stoppedAt", Value::from(now.as_str()));
        }
    }
    event
}

fn now_rfc3339(millis: bool) -> String {
    let format = if millis {
        chrono::SecondsFormat::Millis
    } else {
        chrono::SecondsFormat::Secs
    };
    chrono::Utc::now().to_rfc3339_opts(format, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_matches_a_stopped_event_of_its_cluster_and_group_only() {
        let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
        let cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/switchboard";
        assert!(matches(&reaper_pattern(cluster), &fixture));
        assert!(!matches(&reaper_pattern("arn:other"), &fixture));
        let mut running = fixture.clone();
        running["detail"]["lastStatus"] = "RUNNING".into();
        assert!(!matches(&reaper_pattern(cluster), &running));
        let mut other_group = fixture.clone();
        other_group["detail"]["group"] = "family:web".into();
        assert!(!matches(&reaper_pattern(cluster), &other_group));
        let mut no_group = fixture;
        no_group["detail"].as_object_mut().unwrap().remove("group");
        assert!(!matches(&reaper_pattern(cluster), &no_group));
    }

    #[test]
    fn a_pattern_value_that_is_not_a_list_never_matches() {
        let event = serde_json::json!({ "source": "aws.ecs" });
        assert!(!matches(
            &serde_json::json!({ "source": "aws.ecs" }),
            &event
        ));
        assert!(matches(
            &serde_json::json!({ "source": ["aws.ecs"] }),
            &event
        ));
    }
}
