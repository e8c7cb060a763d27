//! `switchboard-dynamodb create-table NAME`: creates the session table exactly as
//! `template.yaml` declares it (on-demand, the keys-only `live` index, TTL on `expires_at`).
//! `switchboard-dynamodb backfill-ttl NAME`: once, for a table written before ended sessions'
//! metadata and metrics items got their row's TTL (see `dynamodb::backfill_ttl`).
//! Region, credentials and `AWS_ENDPOINT_URL` (for an emulator) come from the environment.

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: switchboard-dynamodb create-table NAME | backfill-ttl NAME");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, table] = args.as_slice() else {
        return usage();
    };
    if table.is_empty() {
        return usage();
    }
    let client = switchboard_aws::dynamodb::client_from_env().await;
    let result = match command.as_str() {
        "create-table" => switchboard_aws::dynamodb::create_table(&client, table)
            .await
            .map(|()| format!("created table {table}")),
        "backfill-ttl" => switchboard_aws::dynamodb::backfill_ttl(&client, table)
            .await
            .map(|r| format!("{table}: {r:?}")),
        _ => return usage(),
    };
    match result {
        Ok(done) => {
            eprintln!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
