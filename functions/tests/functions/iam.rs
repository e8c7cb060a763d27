//! Least privilege, checked offline: every AWS SDK call in the deployed code has its IAM
//! action in template.yaml, and every action there is used by some call.
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

/// The IAM actions the deployed code needs, by what it calls: `("dynamodb", actions)` for the
/// registry and `("all", actions)` for the api function.
fn actions_in_code() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = Vec::new();
    sources(&root().join("aws/src"), &mut files);
    sources(&root().join("functions/src"), &mut files);
    let call = Regex::new(r"client\s*\.\s*([a-z_]+)\s*\(").unwrap();
    let tx_item = Regex::new(r"\b(Put|Update|Delete|ConditionCheck|Get)::builder\(").unwrap();
    let mut dynamodb = BTreeSet::new();
    let mut all = BTreeSet::new();
    for (path, text) in &files {
        for op in call.captures_iter(text).map(|c| c[1].to_owned()) {
            let service = if path.contains("dynamodb") {
                "dynamodb"
            } else if path.ends_with("ecs.rs") {
                "ecs"
            } else {
                panic!("{path}: an SDK call `{op}` of an unknown service: add it here");
            };
            let mut needed = Vec::new();
            match (service, op.as_str()) {
                // A transaction is authorized per item: PutItem, UpdateItem, DeleteItem,
                // ConditionCheckItem, GetItem.
                ("dynamodb", "transact_write_items" | "transact_get_items") => {
                    for item in tx_item.captures_iter(text) {
                        needed.push(match &item[1] {
                            "ConditionCheck" => "dynamodb:ConditionCheckItem".to_owned(),
                            other => format!("dynamodb:{other}Item"),
                        });
                    }
                }
                ("ecs", "run_task") => {
                    needed.push("ecs:RunTask".to_owned());
                    // Tags at launch need TagResource (conditioned on RunTask); the task's
                    // two roles are passed to ECS.
                    if text.contains(".tags(") {
                        needed.push("ecs:TagResource".to_owned());
                    }
                    needed.push("iam:PassRole".to_owned());
                }
                (service, op) => needed.push(format!("{service}:{}", pascal(op))),
            }
            for action in needed {
                if action.starts_with("dynamodb:") {
                    dynamodb.insert(action.clone());
                }
                all.insert(action);
            }
        }
    }
    (dynamodb, all)
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
    let (registry, api) = actions_in_code();
    assert!(
        api.contains("ecs:RunTask") && registry.contains("dynamodb:UpdateItem"),
        "the scan found the calls: {api:?}"
    );
    let granted_api = actions_in_template(&template, "ApiFunction");
    assert_eq!(
        granted_api, api,
        "ApiFunction's policy must grant exactly what the api code calls"
    );
    let granted_task = actions_in_template(&template, "AgentTaskRole");
    assert_eq!(
        granted_task, registry,
        "AgentTaskRole must grant exactly the registry's DynamoDB actions"
    );
    for action in granted_api.iter().chain(&granted_task) {
        assert!(!action.contains('*'), "no wildcard actions: {action}");
    }
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
