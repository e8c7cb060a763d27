//! `switchboard-dynamodb create-table NAME`: creates the session table exactly as
//! `template.yaml` declares it (on-demand, the keys-only `live` index, TTL on `expires_at`).
//! Region, credentials and `AWS_ENDPOINT_URL` (for an emulator) come from the environment.

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: switchboard-dynamodb create-table NAME");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, table] = args.as_slice() else {
        return usage();
    };
    if command != "create-table" || table.is_empty() {
        return usage();
    }
    let client = switchboard_aws::dynamodb::client_from_env().await;
    match switchboard_aws::dynamodb::create_table(&client, table).await {
        Ok(()) => {
            eprintln!("created table {table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
