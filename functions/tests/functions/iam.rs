//! Least privilege is measured, not read from the source: every deployed role's clients
//! record the operations they make while the tests run (`switchboard_aws::calls`,
//! `SWITCHBOARD_RECORD_AWS_CALLS`, set by the test command), and `infra/iam_test.py` then
//! compares each role's recorded calls with the template's grants, both ways. What stays
//! here: the template declares the table the registry uses.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
