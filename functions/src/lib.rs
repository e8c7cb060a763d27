//! The Lambda functions' shared setup: configuration from the environment, validated once at
//! init with errors that name the variable, and the AWS adapters behind the one API router.
//!
//! The binaries stay thin: `api` (every route, behind the HTTP API's `$default` route) reads
//! [`ApiConfig::from_env`], builds its clients once, and hands [`api_router`] to
//! `lambda_http::run`.

pub mod events;
pub mod reaper;
pub mod secrets;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use switchboard_api::auth::JwtPolicy;
use switchboard_api::{AppState, CorsOptions, ServeOptions, registry_readiness};
use switchboard_aws::DynamoRegistry;
use switchboard_aws::calls::Role;
use switchboard_aws::ecs::{Capacity, DEFAULT_RETRY_BUDGET, EcsLauncher, EcsSettings};
use switchboard_aws::pool::{PoolSettings, PooledLauncher, WarmPool};
use switchboard_core::{LimitOptions, Limits, SessionRegistry, SystemClock};

/// The environment variables the `api` function reads.
pub mod env {
    /// The DynamoDB table (required).
    pub const TABLE_NAME: &str = "TABLE_NAME";
    /// The ECS cluster name or ARN (required).
    pub const ECS_CLUSTER: &str = "ECS_CLUSTER";
    /// The agent's task definition (required).
    pub const TASK_DEFINITION: &str = "TASK_DEFINITION";
    /// The agent container's name in it (default `agent`).
    pub const AGENT_CONTAINER: &str = "AGENT_CONTAINER";
    /// Comma-separated awsvpc subnets (required).
    pub const SUBNETS: &str = "SUBNETS";
    /// Comma-separated awsvpc security groups (required).
    pub const SECURITY_GROUPS: &str = "SECURITY_GROUPS";
    /// `ENABLED` or `DISABLED` (default).
    pub const ASSIGN_PUBLIC_IP: &str = "ASSIGN_PUBLIC_IP";
    /// Comma-separated capacity providers, each `name[:weight[:base]]` (e.g.
    /// `FARGATE:1:2,FARGATE_SPOT:3`); empty = the Fargate launch type.
    pub const CAPACITY_PROVIDERS: &str = "CAPACITY_PROVIDERS";
    /// Comma-separated CORS origins allowed to call the deployed API from a browser; unset
    /// or empty allows no cross-origin access (`serve` keeps the anchor's `*`). `*` mirrors
    /// any origin with credentials, as in `serve`.
    pub const CORS_ALLOW_ORIGINS: &str = "CORS_ALLOW_ORIGINS";
    /// Seconds a `starting` session may wait for its task before the reaper ends it
    /// (default 600); also how long a started standby may take to register.
    pub const START_DEADLINE_SECONDS: &str = "START_DEADLINE_SECONDS";
    /// Idle warm standbys to keep (default 0: none, no spend; at most 100).
    pub const WARM_POOL_SIZE: &str = "WARM_POOL_SIZE";
}

/// The largest `WARM_POOL_SIZE`.
pub const MAX_WARM_POOL_SIZE: u32 = 100;

/// With a public-key algorithm (an identity provider's key), tokens must be bound to this
/// deployment: issuer and audience set, unless `AUTH_JWT_ALLOW_UNBOUND_TOKENS=true` (a key
/// set checks this itself, in `JwtPolicy::load`).
fn require_bound_tokens<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<(), ConfigError> {
    use switchboard_api::auth::{AUTH_JWT_ALGORITHM, AUTH_MODE, require_bound};
    let jwt = vars
        .optional(AUTH_MODE)
        .is_some_and(|m| m.eq_ignore_ascii_case("jwt"));
    let algorithm = vars
        .optional(AUTH_JWT_ALGORITHM)
        .unwrap_or_default()
        .to_ascii_uppercase();
    if jwt && matches!(algorithm.as_str(), "RS256" | "ES256") {
        require_bound(
            |name| (vars.0)(name),
            "an RS256/ES256 key (an identity provider's key signs tokens for other applications too)",
        )?;
    }
    Ok(())
}

/// A configuration error, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("{0} is not set (required)")]
    Missing(&'static str),
    /// The authentication settings (`AUTH_*`) cannot be used (no secret is ever shown).
    #[error("invalid authentication configuration: {0}")]
    Auth(#[from] switchboard_api::auth::AuthConfigError),
    /// A variable has a value that cannot be used.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// The `api` function's configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The registry's table.
    pub table: String,
    /// How agents are run.
    pub ecs: EcsSettings,
    /// The warm pool (`WARM_POOL_SIZE` 0: none).
    pub pool: PoolSettings,
    /// Admission limits and the supervisor settings passed to each task.
    pub limits: Limits,
    /// CORS.
    pub cors: CorsOptions,
    /// The JWT policy (`AUTH_MODE=jwt`), or `None` for allow-all (`AUTH_MODE=none`).
    pub auth: Option<Arc<JwtPolicy>>,
    /// `AUTH_MODE=jwt` with its key in Secrets Manager: the `AUTH_*` settings, until
    /// [`ApiConfig::load_auth`] reads the secret (the router refuses to be built before).
    pub auth_pending: Option<PendingAuth>,
}

/// JWT settings whose keys are read at init: a key in Secrets Manager, or a key set.
#[derive(Clone)]
pub struct PendingAuth {
    /// The secret's name or ARN (`AUTH_JWT_KEY_SECRET_ID`), or `None` for a key set
    /// (`AUTH_JWT_JWKS_URL`, among `vars`).
    pub secret_id: Option<String>,
    /// The other `AUTH_*` variables (mode, algorithm, issuer, audience, the key set's URL).
    vars: Vec<(&'static str, String)>,
}

impl PendingAuth {
    /// Where the keys come from, for messages.
    pub fn source(&self) -> String {
        match &self.secret_id {
            Some(id) => id.clone(),
            None => self
                .vars
                .iter()
                .find(|(n, _)| *n == switchboard_api::auth::AUTH_JWT_JWKS_URL)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuth")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    fn required_list(&self, name: &'static str) -> Result<Vec<String>, ConfigError> {
        let values = list(&self.required(name)?);
        if values.is_empty() {
            return Err(ConfigError::Missing(name));
        }
        Ok(values)
    }

    fn parsed<T: std::str::FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.optional(name)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|e: T::Err| ConfigError::Invalid {
                        name,
                        value: value.clone(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }
}

fn limits<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Limits, ConfigError> {
    let options = LimitOptions::from_lookup(&vars.0).map_err(|e| ConfigError::Invalid {
        name: e.name,
        value: e.value,
        reason: e.reason,
    })?;
    Limits::new(options).map_err(|e| ConfigError::Invalid {
        name: "SWITCHBOARD_*",
        value: String::new(),
        reason: e.to_string(),
    })
}

/// How agents' tasks are run (the api's and, for the pool, the reaper's).
fn ecs_settings<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    table: &str,
    limits: Limits,
) -> Result<EcsSettings, ConfigError> {
    let assign_public_ip = match vars.optional(env::ASSIGN_PUBLIC_IP) {
        None => false,
        Some(v) => match v.trim().to_ascii_uppercase().as_str() {
            "ENABLED" | "TRUE" => true,
            "DISABLED" | "FALSE" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    name: env::ASSIGN_PUBLIC_IP,
                    value: v,
                    reason: "expected ENABLED or DISABLED".into(),
                });
            }
        },
    };
    let providers = match vars.optional(env::CAPACITY_PROVIDERS) {
        None => Vec::new(),
        Some(v) => {
            switchboard_aws::ecs::parse_strategy(&v).map_err(|reason| ConfigError::Invalid {
                name: env::CAPACITY_PROVIDERS,
                value: v.clone(),
                reason,
            })?
        }
    };
    Ok(EcsSettings {
        cluster: vars.required(env::ECS_CLUSTER)?,
        task_definition: vars.required(env::TASK_DEFINITION)?,
        container: vars
            .optional(env::AGENT_CONTAINER)
            .unwrap_or_else(|| "agent".into()),
        subnets: vars.required_list(env::SUBNETS)?,
        security_groups: vars.required_list(env::SECURITY_GROUPS)?,
        assign_public_ip,
        capacity: if providers.is_empty() {
            Capacity::Fargate
        } else {
            Capacity::Providers(providers)
        },
        table: table.to_owned(),
        limits,
        retry_budget: DEFAULT_RETRY_BUDGET,
    })
}

/// The start deadline (`START_DEADLINE_SECONDS`).
fn start_deadline<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<std::time::Duration, ConfigError> {
    let seconds: Option<f64> = vars.parsed(env::START_DEADLINE_SECONDS)?;
    match seconds {
        None => Ok(reaper::DEFAULT_START_DEADLINE),
        Some(s) => std::time::Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError::Invalid {
                name: env::START_DEADLINE_SECONDS,
                value: s.to_string(),
                reason: "must be > 0".into(),
            }),
    }
}

/// The warm pool (`WARM_POOL_SIZE`, the standby lease and provisioning deadline).
fn pool_settings<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    limits: &Limits,
) -> Result<PoolSettings, ConfigError> {
    let size: u32 = vars.parsed(env::WARM_POOL_SIZE)?.unwrap_or(0);
    if size > MAX_WARM_POOL_SIZE {
        return Err(ConfigError::Invalid {
            name: env::WARM_POOL_SIZE,
            value: size.to_string(),
            reason: format!("must be at most {MAX_WARM_POOL_SIZE}"),
        });
    }
    Ok(PoolSettings {
        size,
        standby_lease: limits.session_lease(),
        provisioning_deadline: start_deadline(vars)?,
    })
}

impl ApiConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        let table = vars.required(env::TABLE_NAME)?;
        let limits = limits(&vars)?;
        let ecs = ecs_settings(&vars, &table, limits)?;
        let pool = pool_settings(&vars, &limits)?;
        // Secure by default on AWS: no origin is allowed unless the deployer names it.
        let cors = CorsOptions {
            allow_origins: vars
                .optional(env::CORS_ALLOW_ORIGINS)
                .map(|origins| list(&origins))
                .unwrap_or_default(),
            ..CorsOptions::default()
        };
        // Fail at init, not on the first preflight.
        let _checked = cors.layer().map_err(|e| ConfigError::Invalid {
            name: env::CORS_ALLOW_ORIGINS,
            value: cors.allow_origins.join(","),
            reason: e.to_string(),
        })?;
        require_bound_tokens(&vars)?;
        // Keys are read once: here (the variable itself, or a file in the package), or from
        // Secrets Manager by `load_auth` at init.
        use switchboard_api::auth::{
            AUTH_JWT_ALGORITHM, AUTH_JWT_ALLOW_UNBOUND_TOKENS, AUTH_JWT_AUDIENCE, AUTH_JWT_ISSUER,
            AUTH_JWT_JWKS_URL, AUTH_MODE,
        };
        let pending_vars = |vars: &Vars<_>| {
            [
                AUTH_MODE,
                AUTH_JWT_ALGORITHM,
                AUTH_JWT_ISSUER,
                AUTH_JWT_AUDIENCE,
                AUTH_JWT_JWKS_URL,
                AUTH_JWT_ALLOW_UNBOUND_TOKENS,
                switchboard_api::auth::AUTH_JWT_SCOPE_PREFIX,
            ]
            .into_iter()
            .filter_map(|name| Some((name, vars.optional(name)?)))
            .collect()
        };
        let jwks = vars.optional(AUTH_JWT_JWKS_URL);
        let (auth, auth_pending) = match vars.optional(secrets::AUTH_JWT_KEY_SECRET_ID) {
            Some(secret_id) if jwks.is_some() => {
                return Err(ConfigError::Invalid {
                    name: secrets::AUTH_JWT_KEY_SECRET_ID,
                    value: secret_id,
                    reason: format!(
                        "give the keys in exactly one place (not also {AUTH_JWT_JWKS_URL})"
                    ),
                });
            }
            None if jwks.is_some() => (
                None,
                Some(PendingAuth {
                    secret_id: None,
                    vars: pending_vars(&vars),
                }),
            ),
            Some(secret_id) => {
                let jwt = vars
                    .optional(AUTH_MODE)
                    .is_some_and(|m| m.eq_ignore_ascii_case("jwt"));
                if !jwt {
                    return Err(ConfigError::Invalid {
                        name: secrets::AUTH_JWT_KEY_SECRET_ID,
                        value: secret_id,
                        reason: "is only used with AUTH_MODE=jwt".into(),
                    });
                }
                let other_sources = [
                    switchboard_api::auth::AUTH_JWT_KEY,
                    switchboard_api::auth::AUTH_JWT_KEY_FILE,
                ];
                if other_sources
                    .iter()
                    .any(|name| vars.optional(name).is_some())
                {
                    return Err(ConfigError::Invalid {
                        name: secrets::AUTH_JWT_KEY_SECRET_ID,
                        value: secret_id,
                        reason: "give the key in exactly one place (not also AUTH_JWT_KEY or AUTH_JWT_KEY_FILE)".into(),
                    });
                }
                (
                    None,
                    Some(PendingAuth {
                        secret_id: Some(secret_id),
                        vars: pending_vars(&vars),
                    }),
                )
            }
            None => (
                JwtPolicy::from_vars(|name| (vars.0)(name))?.map(Arc::new),
                None,
            ),
        };
        Ok(Self {
            table,
            ecs,
            pool,
            limits,
            cors,
            auth,
            auth_pending,
        })
    }

    /// With a warm pool, `TASK_DEFINITION` as an ARN (a family or `family:revision` is
    /// resolved once, here at init), so that claims compare it with the standbys' own and
    /// the cold path runs the same revision. A no-op without a pool or for an ARN.
    pub async fn resolve_task_definition(
        &mut self,
        sdk: &aws_config::SdkConfig,
    ) -> anyhow::Result<()> {
        resolve_with_pool(&mut self.ecs, self.pool, sdk, Role::Api).await
    }

    /// Reads the JWT key from Secrets Manager when `AUTH_JWT_KEY_SECRET_ID` names it, or the
    /// key set at `AUTH_JWT_JWKS_URL` (once, at init; failing closed); a no-op otherwise.
    pub async fn load_auth(&mut self, sdk: &aws_config::SdkConfig) -> anyhow::Result<()> {
        // Cleared only on success: after a failed read the router still refuses to be built.
        let Some(pending) = self.auth_pending.clone() else {
            return Ok(());
        };
        let key = match &pending.secret_id {
            Some(id) => Some(secrets::secret_string(sdk, id).await?),
            None => None,
        };
        let lookup = |name: &str| {
            if name == switchboard_api::auth::AUTH_JWT_KEY {
                return key.clone();
            }
            pending
                .vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let policy = JwtPolicy::load(lookup)
            .await
            .map_err(ConfigError::from)?
            .ok_or_else(|| anyhow::anyhow!("AUTH_MODE is not jwt"))?;
        self.auth = Some(Arc::new(policy));
        self.auth_pending = None;
        Ok(())
    }
}

/// The `reaper` function's configuration.
#[derive(Debug, Clone)]
pub struct ReaperConfig {
    /// The registry's table.
    pub table: String,
    /// The agents' cluster.
    pub cluster: String,
    /// The agent container's name (its override names the session).
    pub container: String,
    /// Retention of ended rows.
    pub limits: Limits,
    /// How long a `starting` session may wait for its task.
    pub start_deadline: std::time::Duration,
    /// How agents are run, when `TASK_DEFINITION` is set (with the api's network settings):
    /// the sweep then keeps the warm pool and a claimed standby that stopped before its
    /// session joined is re-dispatched. Without it, neither.
    pub ecs: Option<EcsSettings>,
    /// The warm pool.
    pub pool: PoolSettings,
}

impl ReaperConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        let table = vars.required(env::TABLE_NAME)?;
        let limits = limits(&vars)?;
        let ecs = match vars.optional(env::TASK_DEFINITION) {
            Some(_) => Some(ecs_settings(&vars, &table, limits)?),
            None => None,
        };
        let pool = pool_settings(&vars, &limits)?;
        if pool.size > 0 && ecs.is_none() {
            return Err(ConfigError::Missing(env::TASK_DEFINITION));
        }
        Ok(Self {
            table,
            cluster: vars.required(env::ECS_CLUSTER)?,
            container: vars
                .optional(env::AGENT_CONTAINER)
                .unwrap_or_else(|| "agent".into()),
            limits,
            start_deadline: start_deadline(&vars)?,
            ecs,
            pool,
        })
    }

    /// `TASK_DEFINITION` as an ARN (see [`ApiConfig::resolve_task_definition`]).
    pub async fn resolve_task_definition(
        &mut self,
        sdk: &aws_config::SdkConfig,
    ) -> anyhow::Result<()> {
        match &mut self.ecs {
            Some(ecs) => resolve_with_pool(ecs, self.pool, sdk, Role::Reaper).await,
            None => Ok(()),
        }
    }
}

/// With a warm pool, `ecs.task_definition` as an ARN, with `role`'s client.
async fn resolve_with_pool(
    ecs: &mut EcsSettings,
    pool: PoolSettings,
    sdk: &aws_config::SdkConfig,
    role: Role,
) -> anyhow::Result<()> {
    if pool.size > 0 {
        let client = switchboard_aws::ecs::client(sdk, role);
        ecs.task_definition =
            switchboard_aws::pool::resolve_task_definition(&client, &ecs.task_definition).await?;
    }
    Ok(())
}

/// The API router over DynamoDB and ECS, with `/ready` probing the table.
pub fn api_router(config: &ApiConfig, sdk: &aws_config::SdkConfig) -> anyhow::Result<Router> {
    // Fail closed: never serve without the policy the configuration asks for.
    if let Some(pending) = &config.auth_pending {
        anyhow::bail!(
            "the JWT key of {} was not loaded (call ApiConfig::load_auth first)",
            pending.source()
        );
    }
    if config.pool.size > 0 && !config.ecs.task_definition.starts_with("arn:") {
        anyhow::bail!(
            "TASK_DEFINITION {} is not an ARN (call ApiConfig::resolve_task_definition first): claims compare ARNs",
            config.ecs.task_definition
        );
    }
    let dynamo = DynamoRegistry::new(
        switchboard_aws::dynamodb::client_for(sdk, Role::Api),
        config.table.clone(),
        Arc::new(SystemClock),
    );
    let registry: Arc<dyn SessionRegistry> = Arc::new(dynamo.clone());
    let launcher = Arc::new(PooledLauncher::new(warm_pool(
        dynamo,
        EcsLauncher::new(
            switchboard_aws::ecs::client(sdk, Role::Api),
            config.ecs.clone(),
        ),
        config.pool,
    )));
    // Lambda freezes the environment once the response is sent: no part of a start may run
    // after it (a RunTask resumed minutes later, for a client that saw a 503).
    // Refusals as EMF lines: counted on stdout, no call on the request path.
    let fleet = switchboard_aws::emf::EmfFleet(switchboard_aws::emf::Emf::from_env());
    let state = AppState::new(registry.clone(), launcher, config.limits)
        .with_readiness(registry_readiness(registry))
        .with_bounded_starts()
        .with_fleet(Arc::new(fleet));
    let options = ServeOptions {
        cors: config.cors.clone(),
        hooks: config
            .auth
            .as_ref()
            .map(|policy| policy.hooks())
            .unwrap_or_default(),
        ..ServeOptions::default()
    };
    Ok(switchboard_api::router(state, options)?)
}

/// The warm pool on `registry`'s table, starting standbys like `launcher` starts agents.
pub fn warm_pool(registry: DynamoRegistry, launcher: EcsLauncher, pool: PoolSettings) -> WarmPool {
    WarmPool::new(
        switchboard_aws::dynamodb::StandbyRegistry::new(registry),
        launcher,
        pool,
        Arc::new(SystemClock),
    )
}

/// The reaper's warm pool (its binary's wiring, shared with the tests so that the IAM test
/// sees its calls): `None` without `TASK_DEFINITION`.
pub fn reaper_pool(
    config: &ReaperConfig,
    sdk: &aws_config::SdkConfig,
    registry: DynamoRegistry,
) -> Option<WarmPool> {
    let ecs = config.ecs.clone()?;
    Some(warm_pool(
        registry,
        EcsLauncher::new(switchboard_aws::ecs::client(sdk, Role::Reaper), ecs),
        config.pool,
    ))
}

/// Fills the warm pool at the api's init (a no-op without one): one Query and, for what is
/// missing, `RunTask`. A failure is logged, never fatal: the next start and the reaper's
/// sweep top up too.
pub async fn fill_pool_at_init(config: &ApiConfig, sdk: &aws_config::SdkConfig) {
    if config.pool.size == 0 {
        return;
    }
    let pool = warm_pool(
        DynamoRegistry::new(
            switchboard_aws::dynamodb::client_for(sdk, Role::Api),
            config.table.clone(),
            Arc::new(SystemClock),
        ),
        EcsLauncher::new(
            switchboard_aws::ecs::client(sdk, Role::Api),
            config.ecs.clone(),
        ),
        config.pool,
    );
    // Within Lambda's 10 s init, whatever the table and ECS do.
    match tokio::time::timeout(std::time::Duration::from_secs(5), pool.fill()).await {
        Ok(Ok(started)) => {
            tracing::info!(started, size = config.pool.size, "warm pool filled at init")
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not fill the warm pool at init (the next start or sweep will)")
        }
        Err(_) => tracing::warn!(
            "filling the warm pool at init took over 5 s (the next start or sweep will)"
        ),
    }
}

/// The reaper's registry and ECS lookups on `config`'s table and cluster (its binary's
/// wiring, shared with the tests so that the IAM test sees the reaper's calls).
pub fn reaper_parts(
    config: &ReaperConfig,
    sdk: &aws_config::SdkConfig,
    clock: Arc<dyn switchboard_core::Clock>,
) -> (DynamoRegistry, switchboard_aws::ecs_tasks::EcsTasks) {
    (
        DynamoRegistry::new(
            switchboard_aws::dynamodb::client_for(sdk, Role::Reaper),
            config.table.clone(),
            clock,
        ),
        switchboard_aws::ecs_tasks::EcsTasks::new(
            switchboard_aws::ecs::client(sdk, Role::Reaper),
            config.cluster.clone(),
        ),
    )
}

/// The EventBridge client of a deployed role (its calls recorded for the IAM test).
pub fn eventbridge_client(sdk: &aws_config::SdkConfig, role: Role) -> aws_sdk_eventbridge::Client {
    let mut builder = aws_sdk_eventbridge::config::Builder::from(sdk);
    if let Some(recorder) = switchboard_aws::calls::CallRecorder::from_env(role) {
        builder = builder.interceptor(recorder);
    }
    aws_sdk_eventbridge::Client::from_conf(builder.build())
}

/// The SQS client of a deployed role (its calls recorded for the IAM test).
pub fn sqs_client(sdk: &aws_config::SdkConfig, role: Role) -> aws_sdk_sqs::Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(sdk);
    if let Some(recorder) = switchboard_aws::calls::CallRecorder::from_env(role) {
        builder = builder.interceptor(recorder);
    }
    aws_sdk_sqs::Client::from_conf(builder.build())
}

/// Logs for CloudWatch: JSON lines with a timestamp, level from `RUST_LOG` (default `info`);
/// the request id comes from lambda_runtime's span.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_current_span(true)
        .try_init();
}
