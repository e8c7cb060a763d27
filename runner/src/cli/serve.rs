//! `serve`: the local HTTP server, on the memory registry or a DynamoDB table.

use std::sync::Arc;

use anyhow::Context;
use switchboard_agent::{Agent, AgentLauncherBuilder};
use switchboard_api::ServeOptions;
use switchboard_webhooks::{QueueOptions, WebhookQueue};
use tracing::info;

use super::args::{RegistryKind, ServeArgs};
use super::{EffectiveConfig, LimitsConfig, configured, fail, print_config, runtime};
use crate::telemetry::{self, LogLevel};

/// The effective configuration `serve --print-config` prints.
#[derive(Debug, serde::Serialize)]
struct ServeConfig<'a> {
    auth_mode: &'static str,
    host: &'a str,
    port: u16,
    agents_log_level: &'static str,
    http_log_level: &'static str,
    log_format: String,
    registry: RegistryKind,
    table: &'a Option<String>,
    /// Where session events go (the secret is never printed).
    webhook_url: Option<String>,
}

pub(super) fn serve<A: Agent>(
    builder: AgentLauncherBuilder<A>,
    options: ServeOptions,
    args: ServeArgs,
    agent: Option<serde_json::Value>,
) -> u8 {
    let (agents, http) = if args.common.debug {
        (LogLevel::Debug, LogLevel::Debug)
    } else {
        (args.agents_log_level, args.http_log_level)
    };
    telemetry::init(&telemetry::filter(agents, http), args.common.log_format);
    let (builder, limits) = match configured(builder, &args.common.launcher) {
        Ok(configured) => configured,
        Err(e) => return fail(2, &e),
    };
    // AUTH_MODE and AUTH_JWT_*: read once, here; the policy runs before the program's own
    // hooks (both must allow).
    // A key set (AUTH_JWT_JWKS_URL) is read here too, within 2 s, or serve does not start.
    let loaded = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime to read the authentication keys")
        .and_then(|rt| {
            rt.block_on(switchboard_api::auth::JwtPolicy::load(|name| {
                std::env::var(name).ok()
            }))
            .map_err(anyhow::Error::new)
        });
    // SWITCHBOARD_WEBHOOK_URL and _SECRET: read once, here; a bad value stops serve.
    let webhook = match switchboard_webhooks::endpoint_from_lookup(|name| std::env::var(name).ok())
    {
        Ok(Some(_)) if args.registry == RegistryKind::Dynamodb => {
            return fail(
                2,
                &anyhow::anyhow!(
                    "{} applies to the in-memory registry; with --registry dynamodb the table's stream carries the events (docs/events.md)",
                    switchboard_webhooks::SWITCHBOARD_WEBHOOK_URL
                ),
            );
        }
        Ok(endpoint) => endpoint,
        Err(e) => return fail(2, &anyhow::anyhow!(e)),
    };
    let auth = match loaded {
        Ok(policy) => policy.map(Arc::new),
        Err(e) => {
            return fail(2, &e.context("invalid authentication configuration"));
        }
    };
    let options = match &auth {
        Some(policy) => ServeOptions {
            hooks: policy.hooks().then(options.hooks),
            ..options
        },
        None => options,
    };
    if args.common.print_config {
        return print_config(&EffectiveConfig {
            command: "serve",
            settings: ServeConfig {
                auth_mode: if auth.is_some() { "jwt" } else { "none" },
                host: &args.host,
                port: args.port,
                agents_log_level: agents.directive(),
                http_log_level: http.directive(),
                log_format: format!("{:?}", args.common.log_format).to_lowercase(),
                registry: args.registry,
                table: &args.table,
                webhook_url: webhook.as_ref().map(|w| w.shown_url()),
            },
            limits: Some(LimitsConfig::from(&limits)),
            agent,
        });
    }
    crate::splash::show(
        args.common.no_splash,
        &format!(
            "serving on http://{}:{} (the demo page at /, docs at /docs)",
            args.host, args.port
        ),
    );
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
                .await
                .with_context(|| format!("could not resolve host '{}'", args.host))?
                .next()
                .with_context(|| format!("host '{}' has no address", args.host))?;
            let builder = match args.registry {
                RegistryKind::Memory => builder,
                RegistryKind::Dynamodb => dynamodb(builder, args.table.as_deref()).await?,
            };
            let launcher = builder.build().context("invalid launcher options")?;
            if let Some(endpoint) = webhook {
                info!(url = %endpoint.shown_url(), "session events go to the webhook");
                let queue = WebhookQueue::new(
                    endpoint,
                    QueueOptions::default(),
                    launcher.fleet_metrics().clone(),
                );
                let _ = launcher.fleet_metrics().publish_events_to(Arc::new(queue));
            }
            crate::serve::serve(launcher, options, addr, crate::serve::shutdown_signal()).await
        })
    });
    match result {
        Ok(()) => 0,
        Err(e) => fail(1, &e),
    }
}

#[cfg(feature = "aws")]
async fn dynamodb<A: Agent>(
    builder: AgentLauncherBuilder<A>,
    table: Option<&str>,
) -> anyhow::Result<AgentLauncherBuilder<A>> {
    let table =
        table.context("--table (SWITCHBOARD_TABLE) is required with --registry dynamodb")?;
    let client = switchboard_aws::dynamodb::client_from_env().await;
    let registry = switchboard_aws::DynamoRegistry::new(client, table, builder.configured_clock());
    tracing::info!(table, "sessions are recorded in DynamoDB");
    Ok(builder.registry(Arc::new(registry)))
}

#[cfg(not(feature = "aws"))]
async fn dynamodb<A: Agent>(
    _builder: AgentLauncherBuilder<A>,
    _table: Option<&str>,
) -> anyhow::Result<AgentLauncherBuilder<A>> {
    anyhow::bail!("--registry dynamodb {}", super::NEEDS_AWS)
}
