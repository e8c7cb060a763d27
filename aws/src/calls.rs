//! [`CallRecorder`]: an SDK interceptor that records every AWS operation a deployed role's
//! code makes, so that least privilege is *measured*: the test command sets
//! [`RECORD_AWS_CALLS`] while the tests run, each role's clients append what they call, and
//! `infra/iam_test.py` compares that, both ways, with the actions the template grants the
//! role (an action granted and never called is as much a failure as a call without its
//! action).
//!
//! Without the variable (every deployment) nothing is recorded: the interceptor is not even
//! added to the client.

use std::io::Write;
use std::sync::Arc;

use aws_sdk_dynamodb::config::ConfigBag;
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{Intercept, RuntimeComponents, SharedInterceptor};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// The directory to record into (one `<role>.<pid>.jsonl` file per role and process).
pub const RECORD_AWS_CALLS: &str = "SWITCHBOARD_RECORD_AWS_CALLS";

/// A deployed role: one IAM role of `template.yaml`, and the code that runs under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `api` function (`ApiFunction`'s role).
    Api,
    /// The `reaper` function (`ReaperFunction`'s role).
    Reaper,
    /// The agent's ECS task (`AgentTaskRole`).
    AgentTask,
    /// The `events` function (`EventsFunction`'s role): the stream to the bus and the
    /// webhook queue.
    Events,
    /// The `webhooks` function (`WebhookFunction`'s role): the queue to the receiver.
    Webhooks,
}

impl Role {
    /// The template resource whose policies the role holds.
    pub fn resource(self) -> &'static str {
        match self {
            Role::Api => "ApiFunction",
            Role::Reaper => "ReaperFunction",
            Role::AgentTask => "AgentTaskRole",
            Role::Events => "EventsFunction",
            Role::Webhooks => "WebhookFunction",
        }
    }
}

/// Records the operations of one role's clients (see the module docs).
#[derive(Debug, Clone)]
pub struct CallRecorder {
    role: Role,
    path: Arc<std::path::PathBuf>,
}

impl CallRecorder {
    /// A recorder for `role` when [`RECORD_AWS_CALLS`] is set, else `None`.
    pub fn from_env(role: Role) -> Option<SharedInterceptor> {
        let dir = std::env::var_os(RECORD_AWS_CALLS)?;
        let dir = std::path::PathBuf::from(dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot record AWS calls");
            return None;
        }
        let path = dir.join(format!("{}.{}.jsonl", role.resource(), std::process::id()));
        Some(SharedInterceptor::new(Self {
            role,
            path: Arc::new(path),
        }))
    }

    fn record(&self, line: &serde_json::Value) {
        // One write of the whole line: an append-mode write is not split between the threads
        // (and processes) recording at once, where `writeln!` writes in pieces.
        let mut text = line.to_string();
        text.push('\n');
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record an AWS call");
        }
    }
}

/// What of a request decides its IAM actions beyond the operation: the item actions of a
/// transaction, the index a query reads, whether a task is tagged at launch.
fn details(
    input: &aws_smithy_runtime_api::client::interceptors::context::Input,
) -> serde_json::Value {
    use aws_sdk_dynamodb::operation::query::QueryInput;
    use aws_sdk_dynamodb::operation::scan::ScanInput;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
    use aws_sdk_ecs::operation::run_task::RunTaskInput;
    if let Some(tx) = input.downcast_ref::<TransactWriteItemsInput>() {
        let mut kinds: Vec<&str> = tx
            .transact_items()
            .iter()
            .flat_map(|item| {
                [
                    item.put().map(|_| "Put"),
                    item.update().map(|_| "Update"),
                    item.delete().map(|_| "Delete"),
                    item.condition_check().map(|_| "ConditionCheck"),
                ]
            })
            .flatten()
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        return serde_json::json!({ "items": kinds });
    }
    if let Some(query) = input.downcast_ref::<QueryInput>() {
        return serde_json::json!({ "index": query.index_name() });
    }
    if let Some(scan) = input.downcast_ref::<ScanInput>() {
        return serde_json::json!({ "index": scan.index_name() });
    }
    if let Some(run) = input.downcast_ref::<RunTaskInput>() {
        return serde_json::json!({ "tags": !run.tags().is_empty() });
    }
    serde_json::json!({})
}

impl Intercept for CallRecorder {
    fn name(&self) -> &'static str {
        "CallRecorder"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Recording never fails a call.
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let mut line = serde_json::json!({
            "role": self.role.resource(),
            "service": meta.service(),
            "operation": meta.name(),
        });
        if let (Some(input), Some(object)) = (context.inner().input(), line.as_object_mut())
            && let serde_json::Value::Object(more) = details(input)
        {
            object.extend(more);
        }
        self.record(&line);
        Ok(())
    }
}
