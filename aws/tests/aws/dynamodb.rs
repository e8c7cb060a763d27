//! `DynamoRegistry` passes the registry conformance suite unchanged, against moto.

use std::sync::Arc;

use switchboard_aws::DynamoRegistry;
use switchboard_core::{ManualClock, SessionRegistry};

use crate::support::{client, table};

async fn make(clock: Arc<ManualClock>) -> Arc<dyn SessionRegistry> {
    let client = client().await;
    let table = table(&client).await;
    Arc::new(DynamoRegistry::new(client, table, clock))
}

switchboard_core::registry_conformance!(make);
