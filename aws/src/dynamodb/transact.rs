//! One transaction, retried: conflicts and throttling within the registry's deadline, an
//! ambiguous failure with the same idempotency token. Its items are named, and a
//! cancellation is read by those names rather than by position.

use super::*;

/// A transaction's items, each with the name its cancellation reason is read by.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    items: Vec<TransactWriteItem>,
    names: Vec<&'static str>,
}

impl Transaction {
    /// Adds `item` under `name`.
    pub(super) fn push(&mut self, name: &'static str, item: TransactWriteItem) {
        self.items.push(item);
        self.names.push(name);
    }

    /// With `item` under `name`.
    pub(super) fn with(mut self, name: &'static str, item: TransactWriteItem) -> Self {
        self.push(name, item);
        self
    }
}

/// How a transaction came out.
#[derive(Debug)]
pub(super) enum Tx {
    Committed,
    /// Cancelled with a failed condition.
    Cancelled(Cancellation),
}

/// Why a transaction was cancelled: each named item's code.
#[derive(Debug)]
pub(super) struct Cancellation {
    /// `(name, code)` per item, in order; empty when the store reported a failed condition
    /// without per-item reasons.
    reasons: Vec<(&'static str, String)>,
}

impl Cancellation {
    /// Whether the condition of the item named `name` failed.
    pub(super) fn failed(&self, name: &str) -> bool {
        self.reasons
            .iter()
            .any(|(n, code)| *n == name && code == "ConditionalCheckFailed")
    }

    /// Whether the store gave no per-item reasons.
    pub(super) fn without_reasons(&self) -> bool {
        self.reasons.is_empty()
    }
}

impl DynamoRegistry {
    pub(super) async fn transact(
        &self,
        transaction: Transaction,
        token: Option<String>,
        what: &'static str,
    ) -> Result<Tx> {
        let Transaction { items, names } = transaction;
        // Retried within the registry's deadline, or less when less is left of the work's.
        let deadline =
            tokio::time::Instant::now() + switchboard_core::deadline::at_most(self.retry_deadline);
        let mut attempt: u32 = 0;
        // The idempotency token goes with the first attempt and with every retry after an
        // ambiguous failure (a timeout, a 5xx: the transaction may have committed, and the same
        // token makes DynamoDB answer for that commit instead of applying it twice). After a
        // definite cancellation the next attempt gets a fresh token of its own, kept for the
        // retries after it: DynamoDB may replay the cancelled outcome for a token it has seen
        // (for 10 minutes), and the items' conditions (the session's `attribute_not_exists(PK)`)
        // rule out a double commit across tokens anyway.
        let mut send_token = token.clone();
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .set_client_request_token(send_token.clone())
                .customize()
                .config_override(within_deadline())
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Tx::Committed),
                Err(err) => err,
            };
            let retry = match &err {
                SdkError::ServiceError(service) => match service.err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        let codes: Vec<String> = cancelled
                            .cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_owned())
                            .collect();
                        if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                            let reasons = names.iter().copied().zip(codes).collect();
                            return Ok(Tx::Cancelled(Cancellation { reasons }));
                        }
                        let transient = codes.iter().any(|c| {
                            matches!(
                                c.as_str(),
                                "TransactionConflict"
                                    | "ThrottlingError"
                                    | "ProvisionedThroughputExceeded"
                                    | "RequestLimitExceeded"
                            )
                        });
                        if transient {
                            if token.is_some() {
                                send_token = Some(uuid::Uuid::now_v7().to_string());
                            }
                            Some(Error::Unavailable {
                                retry_after: Duration::from_secs(1),
                                source: anyhow::anyhow!(
                                    "{what}: transaction cancelled ({})",
                                    codes.join(", ")
                                ),
                            })
                        } else {
                            return Err(Error::Unexpected(anyhow::Error::new(err).context(what)));
                        }
                    }
                    _ => None,
                },
                _ => None,
            };
            let retry = match retry {
                Some(e) => e,
                None => match classify(err, what) {
                    // Ambiguous (may have committed): the same token again.
                    Failure::Transient(e) => e,
                    Failure::ConditionFailed => {
                        return Ok(Tx::Cancelled(Cancellation {
                            reasons: Vec::new(),
                        }));
                    }
                    Failure::Fatal(e) => return Err(e),
                },
            };
            attempt += 1;
            let cap = 10u64.saturating_mul(1 << attempt.min(5)).min(200);
            let backoff = Duration::from_millis(rand::random_range(5..=cap.max(6)));
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(retry);
            }
            tokio::time::sleep(backoff).await;
        }
    }
}
