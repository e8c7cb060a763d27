//! Listing sessions (`GET /sessions`, `GET /calls/{id}/sessions`, dashboards): a bounded
//! amount of work per request, whatever the table holds, and eventually consistent reads (a
//! list is a snapshot for people; every decision the registry makes reads consistently).
//!
//! - **Live sessions** (the default) come from the sparse `live` index, never a Scan: the 16
//!   shards' keys (keys only, so a few hundred bytes per live session), sorted by call and
//!   creation, then the page's rows by `BatchGetItem`. The work is bounded by the number of
//!   live sessions, not by the table's history. A row that ended after the index was read
//!   is dropped (the index lags its table by a moment).
//! - **With ended sessions**, one call: a `Query` of the call's partition (its session rows
//!   only, by key condition), at most [`MAX_READS`] pages of `limit + 1`.
//! - **With ended sessions**, every call: a `Scan`, at most [`MAX_READS`] pages of
//!   [`scan_page_items`] items each (a Scan's `Limit` counts the items it *evaluates*, every
//!   metadata, metrics, counter and key item included). A page can then come back short, even
//!   empty, with a `next_token`: follow it until it is null.
//!
//! `next_token` is opaque: the position (`PK`, `SK`) of the last item read, hex-encoded, with
//! a `scan` mark for a Scan's position (which can be any item of the table).

use std::collections::HashMap;

use switchboard_core::registry::{ListQuery, ListedSession, SessionPage, page_token};
use switchboard_core::{Error, Result};

use super::item::{
    Item, LIVE_SHARDS, call_pk, expired, get_s, key, metrics_sk, s, session_from_item,
};
use super::queries::report_from_item;
use super::{DynamoRegistry, LIVE_INDEX, plain, values};

/// At most this many Query or Scan pages per list request.
pub const MAX_READS: usize = 4;

/// The items one Scan page evaluates for a page of `limit` sessions: each session leaves up to
/// four items (row, metadata, metrics, key) and each call a counter.
pub fn scan_page_items(limit: usize) -> i32 {
    i32::try_from((limit + 1).saturating_mul(4).clamp(100, 1000)).unwrap_or(1000)
}

/// A list position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// After this session row (`CALL#…`, `SESSION#…`): the live index's and a call's order.
    Row(String, String),
    /// After this item of a Scan (any key of the table).
    Scan(String, String),
}

fn encode(position: &Position) -> String {
    match position {
        Position::Row(pk, sk) => page_token::encode(&format!("{pk}\n{sk}")),
        Position::Scan(pk, sk) => page_token::encode(&format!("scan\n{pk}\n{sk}")),
    }
}

fn decode(token: &str) -> Result<Position> {
    let invalid = || Error::Invalid("next_token is invalid".into());
    let raw = page_token::decode(token)?;
    if let Some(rest) = raw.strip_prefix("scan\n") {
        let (pk, sk) = rest.split_once('\n').ok_or_else(invalid)?;
        if pk.is_empty() || sk.is_empty() {
            return Err(invalid());
        }
        return Ok(Position::Scan(pk.to_owned(), sk.to_owned()));
    }
    let (pk, sk) = raw.split_once('\n').ok_or_else(invalid)?;
    if !pk.starts_with("CALL#") || !sk.starts_with("SESSION#") {
        return Err(invalid());
    }
    Ok(Position::Row(pk.to_owned(), sk.to_owned()))
}

fn pk_sk(item: &Item) -> Option<(String, String)> {
    Some((get_s(item, "PK")?.to_owned(), get_s(item, "SK")?.to_owned()))
}

impl DynamoRegistry {
    pub(super) async fn list_page(&self, query: ListQuery) -> Result<SessionPage> {
        let limit = query.page_size();
        let start = query.next_token.as_deref().map(decode).transpose()?;
        let call = query.call_id.as_ref().map(call_pk);
        // A position must come from the same kind of list.
        match (&start, &call, query.include_ended) {
            (Some(Position::Row(pk, _)), Some(call), _) if pk != call => {
                return Err(Error::Invalid("next_token is invalid".into()));
            }
            (Some(Position::Scan(..)), Some(_), _) | (Some(Position::Scan(..)), None, false) => {
                return Err(Error::Invalid("next_token is invalid".into()));
            }
            _ => {}
        }
        let (rows, next) = if !query.include_ended {
            self.live_rows(call.as_deref(), start, limit).await?
        } else if let Some(call) = &call {
            self.call_rows(call, start, limit).await?
        } else {
            self.scanned_rows(start, limit).await?
        };
        let now = self.clock.now();
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|row| !expired(row, now)) {
            let session = session_from_item(row)?;
            if !query.include_ended && session.is_ended() {
                continue; // ended after the index was read
            }
            sessions.push(session);
        }
        // Ended rows carry their final metrics, live ones their latest when asked.
        let metric_keys: Vec<Item> = sessions
            .iter()
            .filter(|s| s.is_ended() || query.with_metrics)
            .map(|s| key(call_pk(&s.call_id), metrics_sk(s.id)))
            .collect();
        let mut reports = HashMap::new();
        if !metric_keys.is_empty() {
            for item in self.batch_get(metric_keys, false).await? {
                if let Some(position) = pk_sk(&item) {
                    reports.insert(position, report_from_item(&item)?);
                }
            }
        }
        let sessions = sessions
            .into_iter()
            .map(|session| {
                let report = reports.remove(&(call_pk(&session.call_id), metrics_sk(session.id)));
                let ended = session.is_ended();
                ListedSession {
                    session,
                    final_metrics: report.clone().filter(|_| ended),
                    live_metrics: report.filter(|_| !ended),
                }
            })
            .collect();
        Ok(SessionPage {
            sessions,
            next_token: next.as_ref().map(encode),
        })
    }

    /// The keys (`PK`, `SK`) of every live session: each of the 16 shards of the keys-only
    /// `live` index, every page (eventually consistent, as a GSI is).
    pub(super) async fn live_keys(&self) -> Result<Vec<(String, String)>> {
        let mut keys = Vec::new();
        for shard in 0..LIVE_SHARDS {
            let mut exclusive_start = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(LIVE_INDEX)
                    .key_condition_expression("live_pk = :shard")
                    .set_expression_attribute_values(Some(values(&[(
                        ":shard",
                        s(format!("LIVE#{shard:02}")),
                    )])))
                    .set_exclusive_start_key(exclusive_start)
                    .send()
                    .await
                    .map_err(|e| plain(e, "Query live index"))?;
                keys.extend(out.items.unwrap_or_default().iter().filter_map(pk_sk));
                exclusive_start = out.last_evaluated_key;
                if exclusive_start.is_none() {
                    break;
                }
            }
        }
        Ok(keys)
    }

    /// Live rows from the `live` index: every shard's keys (of one call, or all), in call
    /// then creation order, the page after `start`.
    async fn live_rows(
        &self,
        call: Option<&str>,
        start: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<Position>)> {
        let mut keys: Vec<(String, String)> = self
            .live_keys()
            .await?
            .into_iter()
            .filter(|(pk, sk)| sk.starts_with("SESSION#") && call.is_none_or(|c| pk == c))
            .collect();
        keys.sort();
        if let Some(Position::Row(pk, sk)) = &start {
            keys.retain(|k| (&k.0, &k.1) > (pk, sk));
        }
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = more
            .then(|| {
                keys.last()
                    .map(|(pk, sk)| Position::Row(pk.clone(), sk.clone()))
            })
            .flatten();
        let mut rows = self
            .batch_get(
                keys.iter()
                    .map(|(pk, sk)| key(pk.clone(), sk.clone()))
                    .collect(),
                false,
            )
            .await?;
        rows.sort_by_key(pk_sk);
        Ok((rows, next))
    }

    /// A call's rows, ended ones included, in creation order.
    async fn call_rows(
        &self,
        call: &str,
        start: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<Position>)> {
        let start = match start {
            Some(Position::Row(pk, sk)) => Some(key(pk, sk)),
            _ => None,
        };
        let (found, last) = read_pages(limit, start, |from, wanted| async move {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .set_expression_attribute_values(Some(values(&[
                    (":pk", s(call)),
                    (":prefix", s("SESSION#")),
                ])))
                .set_exclusive_start_key(from)
                .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| plain(e, "Query sessions of a call"))?;
            Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
        })
        .await?;
        Ok(page_of(found, limit, last, Position::Row))
    }

    /// Every call's rows, ended ones included, in the table's (hash) order.
    async fn scanned_rows(
        &self,
        start: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<Position>)> {
        let start = match start {
            Some(Position::Row(pk, sk) | Position::Scan(pk, sk)) => Some(key(pk, sk)),
            None => None,
        };
        let (found, last) = read_pages(limit, start, |from, _wanted| async move {
            // A Scan's Limit counts the items it evaluates, not the rows it returns.
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(SK, :prefix)")
                .set_expression_attribute_values(Some(values(&[(":prefix", s("SESSION#"))])))
                .set_exclusive_start_key(from)
                .limit(scan_page_items(limit))
                .send()
                .await
                .map_err(|e| plain(e, "Scan sessions"))?;
            Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
        })
        .await?;
        Ok(page_of(found, limit, last, Position::Scan))
    }
}

/// Reads pages with `read(from, wanted)` (a page's items and its `LastEvaluatedKey`) from
/// `start` until more than `limit` rows are found, the reads reach the end, or
/// [`MAX_READS`] pages were read; returns the rows and the last key read.
async fn read_pages<F, Fut>(
    limit: usize,
    start: Option<Item>,
    mut read: F,
) -> Result<(Vec<Item>, Option<Item>)>
where
    F: FnMut(Option<Item>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Option<Item>)>>,
{
    let mut found: Vec<Item> = Vec::with_capacity(limit + 1);
    let mut from = start;
    let mut last = None;
    for _ in 0..MAX_READS {
        let (items, last_read) = read(from.take(), limit + 1 - found.len()).await?;
        found.extend(items);
        last = last_read;
        if found.len() > limit || last.is_none() {
            break;
        }
        from.clone_from(&last);
    }
    Ok((found, last))
}

/// The first `limit` of `found` and where the next page starts: after the last row returned
/// when there are more rows than the page holds, else after the last item read if the reads
/// stopped before the end.
fn page_of(
    mut found: Vec<Item>,
    limit: usize,
    last_read: Option<Item>,
    position: fn(String, String) -> Position,
) -> (Vec<Item>, Option<Position>) {
    if found.len() > limit {
        found.truncate(limit);
        let next = found
            .last()
            .and_then(pk_sk)
            .map(|(pk, sk)| position(pk, sk));
        return (found, next);
    }
    let next = last_read
        .as_ref()
        .and_then(pk_sk)
        .map(|(pk, sk)| position(pk, sk));
    (found, next)
}
