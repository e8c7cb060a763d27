//! The `api` function's configuration: every missing or bad variable is named at init.

use std::collections::HashMap;

use switchboard_aws::ecs::{Capacity, ProviderShare};
use switchboard_functions::{ApiConfig, ConfigError};

pub fn complete() -> HashMap<&'static str, String> {
    HashMap::from([
        ("TABLE_NAME", "sessions".to_owned()),
        ("ECS_CLUSTER", "agents".to_owned()),
        ("TASK_DEFINITION", "agent:3".to_owned()),
        ("SUBNETS", "subnet-a, subnet-b".to_owned()),
        ("SECURITY_GROUPS", "sg-1".to_owned()),
    ])
}

fn load(vars: &HashMap<&'static str, String>) -> Result<ApiConfig, ConfigError> {
    ApiConfig::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn a_complete_environment_gives_the_defaults() {
    let config = load(&complete()).unwrap();
    assert_eq!(config.table, "sessions");
    assert_eq!(config.ecs.table, "sessions");
    assert_eq!(config.ecs.subnets, ["subnet-a", "subnet-b"]);
    assert_eq!(config.ecs.container, "agent");
    assert_eq!(config.ecs.capacity, Capacity::Fargate);
    assert!(!config.ecs.assign_public_ip);
    assert_eq!(config.limits.max_concurrent_sessions(), None);
}

#[test]
fn limits_capacity_providers_and_public_ip_are_read() {
    let mut vars = complete();
    vars.insert("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "10".into());
    vars.insert("SWITCHBOARD_MAX_SESSIONS_PER_CALL", "2".into());
    vars.insert("SWITCHBOARD_MAINTENANCE_INTERVAL", "2.5".into());
    vars.insert("CAPACITY_PROVIDERS", "FARGATE:1:2,FARGATE_SPOT:3".into());
    vars.insert("ASSIGN_PUBLIC_IP", "ENABLED".into());
    let config = load(&vars).unwrap();
    assert_eq!(config.limits.max_concurrent_sessions(), Some(10));
    assert_eq!(config.limits.max_sessions_per_call(), Some(2));
    assert_eq!(config.ecs.limits, config.limits);
    assert_eq!(
        config.ecs.capacity,
        Capacity::Providers(vec![
            ProviderShare {
                name: "FARGATE".into(),
                weight: 1,
                base: 2
            },
            ProviderShare {
                name: "FARGATE_SPOT".into(),
                weight: 3,
                base: 0
            },
        ])
    );
    assert!(config.ecs.assign_public_ip);
    vars.insert("CAPACITY_PROVIDERS", "FARGATE:1:1,FARGATE_SPOT:1:1".into());
    let err = load(&vars).unwrap_err().to_string();
    assert!(
        err.starts_with("CAPACITY_PROVIDERS=")
            && err.contains("only one capacity provider may have a base"),
        "{err}"
    );
}

#[test]
fn every_missing_required_variable_is_named() {
    for name in [
        "TABLE_NAME",
        "ECS_CLUSTER",
        "TASK_DEFINITION",
        "SUBNETS",
        "SECURITY_GROUPS",
    ] {
        let mut vars = complete();
        vars.remove(name);
        let err = load(&vars).unwrap_err().to_string();
        assert_eq!(err, format!("{name} is not set (required)"));
        let blank = if name.ends_with('S') { " , " } else { "   " };
        vars.insert(name, blank.into());
        let err = load(&vars).unwrap_err().to_string();
        assert_eq!(err, format!("{name} is not set (required)"), "blank {name}");
    }
}

#[test]
fn bad_values_are_named_with_the_reason() {
    let cases = [
        (
            "SWITCHBOARD_MAX_CONCURRENT_SESSIONS",
            "ten",
            "SWITCHBOARD_MAX_CONCURRENT_SESSIONS=\"ten\" is invalid",
        ),
        (
            "SWITCHBOARD_MAX_CONCURRENT_SESSIONS",
            "0",
            "max_concurrent_sessions must be > 0 or None",
        ),
        (
            "SWITCHBOARD_SESSION_LEASE_SECONDS",
            "1",
            "session_lease_seconds must be >= 3 * maintenance_interval",
        ),
        (
            "ASSIGN_PUBLIC_IP",
            "maybe",
            "ASSIGN_PUBLIC_IP=\"maybe\" is invalid: expected ENABLED or DISABLED",
        ),
    ];
    for (name, value, want) in cases {
        let mut vars = complete();
        vars.insert(name, value.into());
        let err = load(&vars).unwrap_err().to_string();
        assert!(err.contains(want), "{name}={value}: {err}");
    }
}
