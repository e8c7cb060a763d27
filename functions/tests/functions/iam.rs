//! Least privilege, checked offline: every AWS SDK call in the deployed code has its IAM
//! action in the template's policy of the role that runs it (api function, reaper function,
//! agent task), and every action there is used by some call of that role's code.
//!
//! The deployed code is `aws/src` and `functions/src` (the `api` binary links both), without
//! the operator tools that run with the operator's own credentials (`aws/src/bin/`, and
//! `aws/src/dynamodb/table.rs`, which creates tables for `switchboard-dynamodb create-table`
//! and the tests) and without `#[cfg(test)]` modules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const OPERATOR_TOOLS: [&str; 2] = ["aws/src/bin", "aws/src/dynamodb/table.rs"];

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        let rel = path
            .strip_prefix(root())
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if OPERATOR_TOOLS.iter().any(|skip| rel.starts_with(skip)) {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else if rel.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            let deployed = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            out.push((rel, deployed));
        }
    }
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The deployed source files (path, text).
fn deployed() -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(&root().join("aws/src"), &mut files);
    sources(&root().join("functions/src"), &mut files);
    files
}

/// What each role runs: the registry (every role), plus each function's own code.
const REGISTRY: &[&str] = &["aws/src/dynamodb/"];
const API: &[&str] = &[
    "aws/src/dynamodb/",
    "aws/src/ecs.rs",
    "functions/src/lib.rs",
    "functions/src/secrets.rs",
    "functions/src/bin/api.rs",
];
const REAPER: &[&str] = &[
    "aws/src/dynamodb/",
    "aws/src/ecs_tasks.rs",
    "functions/src/lib.rs",
    "functions/src/reaper.rs",
    "functions/src/bin/reaper.rs",
];

/// The IAM actions the SDK calls in `files` need.
fn actions_in(files: &[(String, String)], owned: &[&str]) -> BTreeSet<String> {
    let call = Regex::new(r"client\s*\.\s*([a-z_]+)\s*\(").unwrap();
    let tx_item = Regex::new(r"\b(Put|Update|Delete|ConditionCheck|Get)::builder\(").unwrap();
    let mut all = BTreeSet::new();
    for (path, text) in files
        .iter()
        .filter(|(path, _)| owned.iter().any(|o| path.starts_with(o)))
    {
        for op in call.captures_iter(text).map(|c| c[1].to_owned()) {
            let service = if path.contains("dynamodb") {
                "dynamodb"
            } else if path.ends_with("ecs.rs") || path.ends_with("ecs_tasks.rs") {
                "ecs"
            } else if path.ends_with("secrets.rs") {
                "secretsmanager"
            } else {
                panic!("{path}: an SDK call `{op}` of an unknown service: add it here");
            };
            match (service, op.as_str()) {
                // A transaction is authorized per item: PutItem, UpdateItem, DeleteItem,
                // ConditionCheckItem, GetItem.
                ("dynamodb", "transact_write_items" | "transact_get_items") => {
                    for item in tx_item.captures_iter(text) {
                        all.insert(match &item[1] {
                            "ConditionCheck" => "dynamodb:ConditionCheckItem".to_owned(),
                            other => format!("dynamodb:{other}Item"),
                        });
                    }
                }
                ("ecs", "run_task") => {
                    all.insert("ecs:RunTask".to_owned());
                    // Tags at launch need TagResource (conditioned on RunTask); the task's
                    // two roles are passed to ECS.
                    if text.contains(".tags(") {
                        all.insert("ecs:TagResource".to_owned());
                    }
                    all.insert("iam:PassRole".to_owned());
                }
                (service, op) => {
                    all.insert(format!("{service}:{}", pascal(op)));
                }
            }
        }
    }
    all
}

/// The actions granted in the template resource `name` (its block of lines).
fn actions_in_template(template: &str, name: &str) -> BTreeSet<String> {
    let header = format!("  {name}:\n");
    let start = template
        .find(&header)
        .unwrap_or_else(|| panic!("no resource {name} in template.yaml"));
    let block: String = template[start + header.len()..]
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("   "))
        .collect::<Vec<_>>()
        .join("\n");
    let listed = Regex::new(r"(?m)^\s*(?:- |Action:\s*)([a-z0-9]+:[A-Za-z*]+)\s*$").unwrap();
    let actions: BTreeSet<String> = listed
        .captures_iter(&block)
        .map(|c| c[1].to_owned())
        .filter(|a| a != "sts:AssumeRole")
        .collect();
    assert!(!actions.is_empty(), "{name} grants nothing?");
    actions
}

#[test]
fn every_sdk_call_has_its_action_and_every_action_a_call() {
    let template = std::fs::read_to_string(root().join("template.yaml")).expect("template.yaml");
    let files = deployed();
    // Every deployed file that calls AWS belongs to some role's code.
    let call = Regex::new(r"client\s*\.\s*[a-z_]+\s*\(").unwrap();
    for (path, text) in &files {
        if call.is_match(text) {
            assert!(
                [REGISTRY, API, REAPER]
                    .iter()
                    .any(|owned| owned.iter().any(|o| path.starts_with(o))),
                "{path} calls AWS but belongs to no function: add it to API or REAPER"
            );
        }
    }
    let registry = actions_in(&files, REGISTRY);
    assert!(
        registry.contains("dynamodb:UpdateItem"),
        "the scan found the calls: {registry:?}"
    );
    for (resource, owned) in [
        ("ApiFunction", API),
        ("ReaperFunction", REAPER),
        ("AgentTaskRole", REGISTRY),
    ] {
        let granted = actions_in_template(&template, resource);
        let used = actions_in(&files, owned);
        assert_eq!(
            granted, used,
            "{resource} must grant exactly what its code calls"
        );
        for action in &granted {
            assert!(!action.contains('*'), "no wildcard actions: {action}");
        }
    }
    let api = actions_in(&files, API);
    assert!(api.contains("ecs:RunTask") && !api.contains("ecs:StopTask"));
    let reaper = actions_in(&files, REAPER);
    assert!(reaper.contains("ecs:StopTask") && !reaper.contains("ecs:RunTask"));
}

#[test]
fn the_template_declares_the_table_the_registry_uses() {
    let template = std::fs::read_to_string(root().join("template.yaml")).expect("template.yaml");
    for needle in [
        "IndexName: live",
        "AttributeName: live_pk",
        "AttributeName: live_sk",
        "ProjectionType: KEYS_ONLY",
        "AttributeName: expires_at",
        "PointInTimeRecoveryEnabled: true",
        "BillingMode: PAY_PER_REQUEST",
    ] {
        assert!(template.contains(needle), "template.yaml lacks `{needle}`");
    }
    assert_eq!(switchboard_aws::dynamodb::LIVE_INDEX, "live");
}
