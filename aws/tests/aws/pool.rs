//! The warm pool against moto: registrations and their leases, the claim (one winner, at
//! most once, only of the current task definition, only for a `starting` session), the
//! top-up by `RunTask`, and starts through `PooledLauncher` (warm with a standby, cold
//! without), all through `service::start_session` as the API calls it.

use std::sync::Arc;
use std::time::Duration;

use switchboard_aws::DynamoRegistry;
use switchboard_aws::dynamodb::{Renewal, StandbyRegistry};
use switchboard_aws::ecs::EcsLauncher;
use switchboard_aws::pool::{
    PoolSettings, PooledLauncher, STANDBY_STARTED_BY, WarmPool, task_definition_arn,
};
use switchboard_core::conformance::{T0, call, request};
use switchboard_core::registry::{EndRequest, StartOutcome};
use switchboard_core::service::{self, StartSession};
use switchboard_core::{
    EndReason, Error, Limits, ManualClock, Session, SessionRegistry, StandbyState, StartType,
    TaskLauncher,
};

use crate::support;

const LEASE: Duration = Duration::from_secs(30);

struct Fixture {
    registry: DynamoRegistry,
    standbys: StandbyRegistry,
    clock: Arc<ManualClock>,
    ecs: aws_sdk_ecs::Client,
    cluster: String,
    definition: String,
    table: String,
}

async fn fixture() -> Fixture {
    let dynamodb = support::client().await;
    let table = support::table(&dynamodb).await;
    let ecs = support::ecs_client();
    let (cluster, definition) = support::ecs_cluster(&ecs).await;
    let clock = Arc::new(ManualClock::new(T0));
    let registry = DynamoRegistry::new(dynamodb, table.clone(), clock.clone());
    Fixture {
        standbys: StandbyRegistry::new(registry.clone()),
        registry,
        clock,
        ecs,
        cluster,
        definition,
        table,
    }
}

impl Fixture {
    async fn session(&self, call_id: &str) -> Session {
        let StartOutcome::Created(session) =
            self.registry.start(request(&call(call_id))).await.unwrap()
        else {
            panic!("replayed")
        };
        session
    }

    async fn idle(&self, arn: &str) {
        self.standbys
            .register(arn, &self.definition, LEASE)
            .await
            .unwrap();
    }

    fn pool(&self, size: u32) -> WarmPool {
        WarmPool::new(
            self.standbys.clone(),
            EcsLauncher::new(
                self.ecs.clone(),
                support::ecs_settings(
                    &self.cluster,
                    &self.definition,
                    &self.table,
                    Limits::default(),
                ),
            ),
            PoolSettings {
                size,
                standby_lease: LEASE,
                provisioning_deadline: Duration::from_secs(600),
            },
            self.clock.clone(),
        )
    }

    async fn row(&self, s: &Session) -> Session {
        self.registry.get(&s.call_id, s.id).await.unwrap().unwrap()
    }

    async fn state(&self, arn: &str) -> Option<StandbyState> {
        self.standbys.get(arn, true).await.unwrap().map(|s| s.state)
    }
}

fn arn(n: u32) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task/c/standby-{n}")
}

#[test]
fn a_task_definition_arn_comes_from_the_task_arn_and_its_family_and_revision() {
    assert_eq!(
        task_definition_arn(
            "arn:aws:ecs:eu-west-1:111122223333:task/cl/abc",
            "agent",
            "7"
        )
        .as_deref(),
        Some("arn:aws:ecs:eu-west-1:111122223333:task-definition/agent:7")
    );
    assert_eq!(
        task_definition_arn("arn:aws:ecs:eu-west-1:1:task/abc", "agent", "").as_deref(),
        None
    );
    assert_eq!(task_definition_arn("not an arn", "agent", "1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_registers_renews_and_learns_its_claim() {
    let f = fixture().await;
    let standby = arn(1);
    f.standbys
        .provision(&standby, &f.definition, LEASE)
        .await
        .unwrap();
    assert_eq!(f.state(&standby).await, Some(StandbyState::Provisioning));
    f.idle(&standby).await;
    assert_eq!(f.state(&standby).await, Some(StandbyState::Idle));
    // A provisioning write after the registration (a slow api) never hides it.
    f.standbys
        .provision(&standby, &f.definition, LEASE)
        .await
        .unwrap();
    assert_eq!(f.state(&standby).await, Some(StandbyState::Idle));
    assert!(matches!(
        f.standbys.register(&standby, &f.definition, LEASE).await,
        Err(Error::Conflict(_))
    ));
    f.clock.advance(Duration::from_secs(10));
    let Renewal::Renewed(until) = f.standbys.renew(&standby, LEASE).await.unwrap() else {
        panic!("not renewed")
    };
    assert_eq!(until, T0 + Duration::from_secs(10) + LEASE);

    let session = f.session("call-a").await;
    assert!(
        f.standbys
            .claim(&standby, &f.definition, &session)
            .await
            .unwrap()
    );
    assert_eq!(
        f.standbys.renew(&standby, LEASE).await.unwrap(),
        Renewal::Claimed(session.call_id.clone(), session.id)
    );
    let row = f.row(&session).await;
    assert_eq!(row.task_arn.as_deref(), Some(standby.as_str()));
    assert_eq!(row.start_type, Some(StartType::Warm));

    f.standbys.delete(&standby, None).await.unwrap();
    assert_eq!(
        f.standbys.renew(&standby, LEASE).await.unwrap(),
        Renewal::Gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_is_claimed_once_and_only_when_idle_leased_current_and_for_a_starting_session() {
    let f = fixture().await;
    let standby = arn(1);
    f.idle(&standby).await;
    // Twenty claimers at once, each for its own session: exactly one wins.
    let mut sessions = Vec::new();
    for i in 0..20 {
        sessions.push(f.session(&format!("call-{i}")).await);
    }
    let claims = futures_claims(&f, &standby, &sessions).await;
    assert_eq!(claims.iter().filter(|won| **won).count(), 1, "{claims:?}");
    let winner = &sessions[claims.iter().position(|w| *w).unwrap()];
    let claimed = f.standbys.get(&standby, true).await.unwrap().unwrap();
    assert_eq!(claimed.session, Some((winner.call_id.clone(), winner.id)));
    for (session, won) in sessions.iter().zip(&claims) {
        let row = f.row(session).await;
        assert_eq!(
            row.task_arn.is_some(),
            *won,
            "only the winner's row names the standby"
        );
    }

    // Of another task definition: never.
    let other = arn(2);
    f.standbys
        .register(&other, &format!("{}-old", f.definition), LEASE)
        .await
        .unwrap();
    let s = f.session("call-other").await;
    assert!(!f.standbys.claim(&other, &f.definition, &s).await.unwrap());

    // Its lease lapsed: never.
    let lapsed = arn(3);
    f.idle(&lapsed).await;
    f.clock.advance(LEASE);
    assert!(!f.standbys.claim(&lapsed, &f.definition, &s).await.unwrap());
    assert_eq!(f.state(&lapsed).await, Some(StandbyState::Idle));

    // A session that is no longer starting: Conflict, and the standby stays idle.
    let fresh = arn(4);
    f.idle(&fresh).await;
    f.registry
        .end(&s.call_id, s.id, EndRequest::new(EndReason::Requested))
        .await
        .unwrap();
    assert!(matches!(
        f.standbys.claim(&fresh, &f.definition, &s).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(f.state(&fresh).await, Some(StandbyState::Idle));
}

async fn futures_claims(f: &Fixture, standby: &str, sessions: &[Session]) -> Vec<bool> {
    let mut handles = Vec::new();
    for session in sessions {
        let (standbys, standby, definition, session) = (
            f.standbys.clone(),
            standby.to_owned(),
            f.definition.clone(),
            session.clone(),
        );
        handles.push(tokio::spawn(async move {
            standbys
                .claim(&standby, &definition, &session)
                .await
                .unwrap()
        }));
    }
    let mut won = Vec::new();
    for handle in handles {
        won.push(handle.await.unwrap());
    }
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_conditional_on_the_state() {
    let f = fixture().await;
    let standby = arn(1);
    f.idle(&standby).await;
    let session = f.session("call-a").await;
    assert!(
        f.standbys
            .claim(&standby, &f.definition, &session)
            .await
            .unwrap()
    );
    assert!(
        !f.standbys
            .delete(
                &standby,
                Some(&[StandbyState::Idle, StandbyState::Provisioning])
            )
            .await
            .unwrap(),
        "a claimed standby is not deregistered as an idle one"
    );
    assert!(f.standbys.delete(&standby, None).await.unwrap());
    assert!(!f.standbys.delete(&standby, None).await.unwrap(), "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_claim_a_standby_warm_then_go_cold_and_the_pool_tops_itself_up() {
    let f = fixture().await;
    let pool = f.pool(2);
    // The api's init: two standbys started and recorded provisioning.
    assert_eq!(pool.fill().await.unwrap(), 2);
    let listed = f.standbys.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|s| s.state == StandbyState::Provisioning && s.task_definition == f.definition)
    );
    let tasks = f
        .ecs
        .list_tasks()
        .cluster(&f.cluster)
        .started_by(STANDBY_STARTED_BY)
        .send()
        .await
        .unwrap();
    assert_eq!(tasks.task_arns().len(), 2);
    let described = f
        .ecs
        .describe_tasks()
        .cluster(&f.cluster)
        .set_tasks(Some(tasks.task_arns().to_vec()))
        .send()
        .await
        .unwrap();
    for task in described.tasks() {
        assert_eq!(task.group(), Some(switchboard_aws::ecs::TASK_GROUP));
        let env = task.overrides().unwrap().container_overrides()[0].environment();
        let names: Vec<&str> = env.iter().filter_map(|kv| kv.name()).collect();
        assert!(
            names.contains(&"STANDBY") && names.contains(&"TABLE_NAME"),
            "{names:?}"
        );
        assert!(
            !names.contains(&"SESSION_ID") && !names.contains(&"CALL_ID"),
            "{names:?}"
        );
    }
    // Filled: nothing more to start.
    assert_eq!(pool.fill().await.unwrap(), 0);

    // Both register (as their tasks would once warm).
    for standby in &listed {
        f.idle(&standby.task_arn).await;
    }
    let launcher = PooledLauncher::new(pool.clone());
    let limits = Limits::default();
    let start = |call_id: &'static str| {
        let (registry, launcher) = (f.registry.clone(), launcher.clone());
        async move {
            service::start_session(
                &registry,
                &launcher,
                &limits,
                call(call_id),
                StartSession::default(),
            )
            .await
            .unwrap()
            .session
            .unwrap()
        }
    };
    let first = start("warm-1").await;
    assert_eq!(first.start_type, Some(StartType::Warm));
    let row = f.row(&first).await;
    assert_eq!(row.start_type, Some(StartType::Warm));
    assert!(
        listed
            .iter()
            .any(|s| Some(&s.task_arn) == row.task_arn.as_ref())
    );
    // The claim started one standby to refill.
    let after = f.standbys.list().await.unwrap();
    assert_eq!(after.len(), 3, "{after:#?}");
    assert_eq!(
        after
            .iter()
            .filter(|s| s.state == StandbyState::Provisioning)
            .count(),
        1
    );

    let second = start("warm-2").await;
    assert_eq!(second.start_type, Some(StartType::Warm));
    // Only a provisioning one is left: cold, and the pool tops up again.
    let third = start("cold-1").await;
    assert_eq!(third.start_type, Some(StartType::Cold));
    let row = f.row(&third).await;
    assert_eq!(row.start_type, Some(StartType::Cold));
    let cold = f
        .ecs
        .list_tasks()
        .cluster(&f.cluster)
        .started_by(third.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(cold.task_arns(), [row.task_arn.clone().unwrap()]);
    let supply = f
        .standbys
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.state != StandbyState::Claimed)
        .count();
    assert_eq!(supply, 2, "refilled to two idle-or-provisioning standbys");

    // The operators' view.
    let status = launcher.pool().await.unwrap().unwrap();
    assert_eq!(status.target_size, 2);
    assert_eq!(status.task_definition, f.definition);
    assert_eq!(status.standbys.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pool_size_a_start_never_reads_the_pool() {
    let f = fixture().await;
    // A standby is registered, but the pool's size is 0: cold, exactly as without a pool.
    f.idle(&arn(1)).await;
    let launcher = PooledLauncher::new(f.pool(0));
    let started = service::start_session(
        &f.registry,
        &launcher,
        &Limits::default(),
        call("c"),
        StartSession::default(),
    )
    .await
    .unwrap();
    assert_eq!(started.session.unwrap().start_type, Some(StartType::Cold));
    assert_eq!(f.state(&arn(1)).await, Some(StandbyState::Idle));
}
