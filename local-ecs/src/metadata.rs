//! The ECS task metadata endpoint v4, as Fargate serves it to each task's containers
//! (`ECS_CONTAINER_METADATA_URI_V4`): `GET ${URI}` is the container's metadata, `GET
//! ${URI}/task` the task's. The agent runtime reads its task ARN from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::TaskInfo;

type Tasks = Arc<Mutex<HashMap<String, Value>>>;

/// The endpoint: one path per task, by task id.
#[derive(Debug, Clone)]
pub struct MetadataServer {
    base: String,
    tasks: Tasks,
}

impl MetadataServer {
    /// Serves on a free loopback port until the runtime stops.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}/v4", listener.local_addr()?);
        let tasks: Tasks = Arc::default();
        let router = axum::Router::new()
            .route("/v4/{id}", get(container))
            .route("/v4/{id}/task", get(task))
            .with_state(tasks.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { base, tasks })
    }

    /// Registers a task; returns its `ECS_CONTAINER_METADATA_URI_V4`.
    pub fn register(&self, info: &TaskInfo) -> String {
        let container = json!({
            "DockerId": info.container_id,
            "Name": info.container,
            "DockerName": format!("ecs-{}-{}", info.family, info.container),
            "Image": "local",
            "Labels": {
                "com.amazonaws.ecs.cluster": info.cluster_arn,
                "com.amazonaws.ecs.container-name": info.container,
                "com.amazonaws.ecs.task-arn": info.arn,
                "com.amazonaws.ecs.task-definition-family": info.family,
                "com.amazonaws.ecs.task-definition-version": info.revision,
            },
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Type": "NORMAL",
            "ContainerARN": format!("{}/{}", info.arn.replacen(":task/", ":container/", 1), info.container_id),
            "LogDriver": "local",
        });
        let task = json!({
            "Cluster": info.cluster_arn,
            "TaskARN": info.arn,
            "Family": info.family,
            "Revision": info.revision,
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "PullStartedAt": info.created_at,
            "AvailabilityZone": format!("{}a", info.region),
            "LaunchType": "FARGATE",
            "Containers": [container.clone()],
        });
        lock(&self.tasks).insert(
            info.id.clone(),
            json!({ "task": task, "container": container }),
        );
        format!("{}/{}", self.base, info.id)
    }

    /// Forgets a task once it stopped.
    pub fn unregister(&self, id: &str) {
        lock(&self.tasks).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn container(
    State(tasks): State<Tasks>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    let found = lock(&tasks).get(&id).map(|t| t["container"].clone());
    found.map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn task(
    State(tasks): State<Tasks>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    let found = lock(&tasks).get(&id).map(|t| t["task"].clone());
    found.map(Json).ok_or(StatusCode::NOT_FOUND)
}
