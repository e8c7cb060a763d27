//! Fargate's part: the local ECS's tasks and processes, their faults (kills, held and
//! replayed events), the warm pool's standbys, and a deploy of a new task definition.

use super::*;

impl World {
    pub(super) async fn running_arns(&self) -> Option<HashSet<String>> {
        switchboard_local_ecs::running_task_arns(&self.ecs, &self.cluster)
            .await
            .ok()
    }

    /// SIGKILLs a running agent picked by `rng`; returns its session.
    pub fn kill_one(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let running = self.local.running();
        if running.is_empty() {
            return None;
        }
        let task = &running[rng.usize(0..running.len())];
        self.local
            .kill(&task.task_arn)
            .then(|| task.session_id.clone())
            .flatten()
    }

    /// SIGKILLs an idle standby picked by `rng`; false if none runs.
    pub async fn kill_idle_standby(&self, rng: &mut fastrand::Rng) -> bool {
        let idle: HashSet<String> = self
            .standbys()
            .await
            .into_iter()
            .filter(|s| s.state == StandbyState::Idle)
            .map(|s| s.task_arn)
            .collect();
        let running: Vec<_> = self
            .local
            .running()
            .into_iter()
            .filter(|r| idle.contains(&r.task_arn))
            .collect();
        if running.is_empty() {
            return false;
        }
        self.local
            .kill(&running[rng.usize(0..running.len())].task_arn)
    }

    /// SIGKILLs the standby claimed for `session_id`, if one is (right after its start: most
    /// often before its agent joined).
    pub async fn kill_claimed_standby(&self, session_id: &str) -> bool {
        let standby = self.standbys().await.into_iter().find(|s| {
            s.session
                .as_ref()
                .is_some_and(|(_, id)| id.to_string() == session_id)
        });
        standby.is_some_and(|s| self.local.kill(&s.task_arn))
    }

    /// How many agent processes the local ECS started.
    pub fn agents_started(&self) -> usize {
        self.local.started()
    }

    /// The exits so far.
    pub fn exits(&self) -> Vec<Exited> {
        self.local
            .exits()
            .into_iter()
            .map(|e| Exited {
                session_id: e.session_id.unwrap_or_default(),
                code: e.code,
                at: Timestamp::from_system(e.at),
            })
            .collect()
    }

    /// Holds every event until [`World::release_events`].
    pub fn hold_events(&self) {
        self.local.hold_events();
    }

    pub fn release_events(&self) {
        self.local.release_events();
    }

    pub fn events_pending(&self) -> usize {
        self.local.events_pending()
    }

    /// Sends an already delivered event again, late (EventBridge delivers at least once).
    pub fn replay_event(&self, rng: &mut fastrand::Rng) -> bool {
        self.local.replay_event(rng)
    }

    /// The warm pool's registrations (empty without a pool).
    pub async fn standbys(&self) -> Vec<switchboard_core::Standby> {
        if self.settings.pool == 0 {
            return Vec::new();
        }
        let pool = lock(&self.reaper.pool).clone();
        pool.standbys().list().await.unwrap_or_default()
    }

    /// A deploy: a new revision of the agent's task definition, which the api's claims and
    /// cold starts and the reaper's pool use from now on (its sweep stops the old idle
    /// standbys). Returns the new ARN.
    pub async fn deploy(&self) -> String {
        let old = lock(&self.definition).clone();
        let described = self
            .ecs
            .describe_task_definition()
            .task_definition(&old)
            .send()
            .await
            .expect("describe the task definition");
        let d = described.task_definition().expect("a definition");
        let registered = self
            .ecs
            .register_task_definition()
            .family(d.family().unwrap_or_default())
            .set_requires_compatibilities(Some(d.requires_compatibilities().to_vec()))
            .set_network_mode(d.network_mode().cloned())
            .set_cpu(d.cpu().map(str::to_owned))
            .set_memory(d.memory().map(str::to_owned))
            .set_container_definitions(Some(d.container_definitions().to_vec()))
            .send()
            .await
            .expect("register a new revision");
        let new = registered
            .task_definition()
            .and_then(|d| d.task_definition_arn())
            .expect("its ARN")
            .to_owned();
        let limits = self.settings.limits;
        let pool = {
            let current = lock(&self.reaper.pool).clone();
            WarmPool::new(
                current.standbys().clone(),
                EcsLauncher::new(
                    self.ecs.clone(),
                    switchboard_testkit::ecs_settings(&self.cluster, &new, &self.table, limits),
                ),
                current.settings(),
                Arc::new(SystemClock),
            )
        };
        *lock(&self.definition) = new.clone();
        *lock(&self.launcher.0) = Arc::new(PooledLauncher::new(pool.clone()));
        *lock(&self.reaper.pool) = pool;
        new
    }
}
