//! [`EcsTasks`]: what the reaper asks ECS about a session's task, and how it stops one.
//! (The launch side is [`crate::ecs::EcsLauncher`]; the two are separate so that each Lambda
//! function's role grants exactly the calls its code makes.)

use aws_sdk_ecs::Client;
use switchboard_core::Error;

/// A task ECS still runs (or is still starting: PROVISIONING, PENDING, ACTIVATING, RUNNING).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTask {
    /// Its ARN.
    pub arn: String,
    /// Its `lastStatus`.
    pub last_status: String,
}

/// ECS task lookups and stops on one cluster.
#[derive(Debug, Clone)]
pub struct EcsTasks {
    client: Client,
    cluster: String,
}

fn failed<E>(err: E, what: &'static str) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::Unavailable {
        retry_after: std::time::Duration::from_secs(1),
        source: anyhow::Error::new(err).context(what),
    }
}

impl EcsTasks {
    /// Tasks of `cluster`.
    pub fn new(client: Client, cluster: impl Into<String>) -> Self {
        Self {
            client,
            cluster: cluster.into(),
        }
    }

    /// The tasks `startedBy` a session that ECS has not stopped.
    ///
    /// `startedBy` is the request's only filter: the ECS API reference says "When you specify
    /// startedBy as the filter, it must be the only filter that you use". ListTasks' default
    /// status filter is already `RUNNING` (desired status), and `DescribeTasks` drops what
    /// has stopped meanwhile.
    pub async fn live_tasks_started_by(&self, started_by: &str) -> Result<Vec<LiveTask>, Error> {
        let listed = self
            .client
            .list_tasks()
            .cluster(&self.cluster)
            .started_by(started_by)
            .send()
            .await
            .map_err(|e| failed(e, "ListTasks"))?;
        if listed.task_arns().is_empty() {
            return Ok(Vec::new());
        }
        self.live(listed.task_arns()).await
    }

    /// Those of `arns` that ECS has not stopped (`DescribeTasks`; a task it no longer knows
    /// is gone too).
    pub async fn live(&self, arns: &[String]) -> Result<Vec<LiveTask>, Error> {
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let described = self
            .client
            .describe_tasks()
            .cluster(&self.cluster)
            .set_tasks(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| failed(e, "DescribeTasks"))?;
        Ok(described
            .tasks()
            .iter()
            .filter(|t| t.last_status() != Some("STOPPED"))
            .filter_map(|t| {
                Some(LiveTask {
                    arn: t.task_arn()?.to_owned(),
                    last_status: t.last_status().unwrap_or_default().to_owned(),
                })
            })
            .collect())
    }

    /// Stops a task (its container gets SIGTERM, then SIGKILL after the stop timeout). A task
    /// that is already gone is fine.
    pub async fn stop(&self, task_arn: &str, reason: &str) -> Result<(), Error> {
        match self
            .client
            .stop_task()
            .cluster(&self.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let gone = e
                    .as_service_error()
                    .is_some_and(|s| s.is_invalid_parameter_exception());
                if gone {
                    Ok(())
                } else {
                    Err(failed(e, "StopTask"))
                }
            }
        }
    }
}
