//! Part of row 6, **exactly-once increments measured natively**: forms of an increment whose
//! retry cannot apply twice, driven by [`WRITERS`] native clients beside the backend's plain
//! counter in the same run, step by step, so the table shows which step costs before a host
//! is built on one. Every form is checked exact after each round. Part of row 8: what a check
//! of values' sizes inside a Redis script costs at the least.
//!
//! - **Redis:** `INCRBY`; the same inside a script; a script that adds and records the total
//!   under the request id (`HSET`), nothing else (no pruning, no range check).
//! - **DynamoDB:** `UpdateItem ADD`; `SET c = c + :d` conditioned on the item's incarnation
//!   (what any add that must not land on a replaced item costs, without a record); two ways
//!   of recording in the same `UpdateItem`:
//!   - **a slot per writer** (`s.#w = :seq, v.#w = c + :d`, conditioned on the writer's last
//!     sequence number being lower): a writer that sends its requests on a key one after the
//!     other, in increasing sequence, finds a lost reply's outcome in its slot, and an old
//!     copy arriving late is refused; the item holds one small entry per writer;
//!   - **a record per request** (`j.#r = c + :d`), conditioned on the request not being
//!     recorded and on the records not having been trimmed past what the writer had seen when
//!     it first sent the request, the records trimmed to the newest half when [`RECORDS_KEPT`]
//!     of them are kept. (Here every failed condition means nothing was applied, so a writer
//!     refreshes what it has seen and resends; a host whose reply was lost could not.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::ROUNDS;
use super::hot_key::WRITERS;

/// Records kept on the item before the older half is trimmed. Of 8, 32, 64, 128 and 256 tried
/// on 2026-12-07, 64 was fastest: fewer trim more often, more make every write larger.
const RECORDS_KEPT: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum RedisForm {
    Incrby,
    Scripted,
    Recorded,
}

/// A script that adds and records the total: the least an exactly-once `INCRBY` runs.
const RECORDED_INCRBY: &str = "local total = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], total)
return total";

/// The same add inside a script, without the record: what the script itself costs.
const SCRIPTED_INCRBY: &str = "return redis.call('INCRBY', KEYS[1], ARGV[2])";

/// The three Redis forms at [`WRITERS`] writers on one multiplexed connection, best of
/// [`ROUNDS`] each, as a markdown table.
pub async fn redis_floor(
    connection: &redis::aio::MultiplexedConnection,
    window: Duration,
) -> anyhow::Result<String> {
    let forms = [RedisForm::Incrby, RedisForm::Scripted, RedisForm::Recorded];
    let mut best = [0f64; 3];
    let mut control = connection.clone();
    for round in 0..ROUNDS {
        for (index, form) in forms.into_iter().enumerate() {
            redis::cmd("DEL")
                .arg("floor-counter")
                .arg("floor-records")
                .query_async::<()>(&mut control)
                .await?;
            let script = redis::Script::new(match form {
                RedisForm::Recorded => RECORDED_INCRBY,
                _ => SCRIPTED_INCRBY,
            });
            let started = Instant::now();
            let deadline = started + window;
            let writers: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let (mut connection, script) = (connection.clone(), script.clone());
                    tokio::spawn(async move {
                        let mut count = 0u64;
                        while Instant::now() < deadline {
                            if form == RedisForm::Incrby {
                                redis::cmd("INCRBY")
                                    .arg("floor-counter")
                                    .arg(1)
                                    .query_async::<i64>(&mut connection)
                                    .await?;
                            } else {
                                script
                                    .key("floor-counter")
                                    .key("floor-records")
                                    .arg(format!("{round}.{writer}.{count}"))
                                    .arg(1)
                                    .invoke_async::<i64>(&mut connection)
                                    .await?;
                            }
                            count += 1;
                        }
                        anyhow::Ok(count)
                    })
                })
                .collect();
            let counted = joined(writers).await?;
            let rate = counted as f64 / started.elapsed().as_secs_f64();
            let total: u64 = redis::cmd("GET")
                .arg("floor-counter")
                .query_async(&mut control)
                .await?;
            anyhow::ensure!(
                total == counted,
                "redis floor: the counter is {total} after {counted} increments"
            );
            if form == RedisForm::Recorded {
                let records: u64 = redis::cmd("HLEN")
                    .arg("floor-records")
                    .query_async(&mut control)
                    .await?;
                anyhow::ensure!(
                    records == counted,
                    "redis floor: {records} records of {counted} increments"
                );
            }
            best[index] = best[index].max(rate);
        }
    }
    redis::cmd("DEL")
        .arg("floor-counter")
        .arg("floor-records")
        .query_async::<()>(&mut control)
        .await?;
    Ok(format!(
        "\n#### Exactly-once increments on Redis, natively\n\n\
         | {WRITERS} native writers on one key, one connection | ok/s | of `INCRBY` |\n|---|---:|---:|\n\
         | `INCRBY` | {:.0} | 1.00 |\n\
         | a script of `INCRBY` alone | {:.0} | {:.2} |\n\
         | a script of `INCRBY`, then `HSET` of the total under the request id | {:.0} | {:.2} |\n",
        best[0],
        best[1],
        best[1] / best[0],
        best[2],
        best[2] / best[0],
    ))
}

#[derive(Clone, Copy, PartialEq)]
enum DynamoForm {
    Add,
    ConditionedAdd,
    Slotted,
    /// The provider's own batch write (`kv_aws`'s slot increment), one increment per batch.
    ProviderWrite,
    Recorded,
}

fn floor_key() -> HashMap<String, AttributeValue> {
    [
        ("ns".to_string(), AttributeValue::S("native-bench".into())),
        ("k".to_string(), AttributeValue::S("floor".into())),
    ]
    .into_iter()
    .collect()
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> anyhow::Result<u64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => Ok(value.parse()?),
        other => anyhow::bail!("dynamodb floor: {name} is {other:?}"),
    }
}

/// The floor's item, read consistently.
async fn read_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<HashMap<String, AttributeValue>> {
    Ok(client
        .get_item()
        .table_name(table)
        .set_key(Some(floor_key()))
        .consistent_read(true)
        .send()
        .await?
        .item
        .unwrap_or_default())
}

fn is_conditional_failure<E: ProvideErrorMetadata, R>(
    err: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    err.as_service_error().and_then(|service| service.code())
        == Some("ConditionalCheckFailedException")
}

/// The three DynamoDB forms at [`WRITERS`] writers, best of [`ROUNDS`] each, as a markdown
/// table.
pub async fn dynamo_floor(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    hosts: &[std::sync::Arc<kv_core::Stores>],
    window: Duration,
) -> anyhow::Result<String> {
    let forms = [
        DynamoForm::Add,
        DynamoForm::ConditionedAdd,
        DynamoForm::Slotted,
        DynamoForm::ProviderWrite,
        DynamoForm::Recorded,
    ];
    let mut best = [0f64; 5];
    let mut best_host = 0f64;
    let mut trims = 0u64;
    for round in 0..ROUNDS {
        // The host around the provider's write, in the same rounds: a store per process.
        best_host = best_host.max(super::hot_key::host_rate(hosts, window).await?);
        for (index, form) in forms.into_iter().enumerate() {
            let incarnation = format!("{round}-{index}-{}", super::unix_ms());
            client
                .put_item()
                .table_name(table)
                .set_item(Some(
                    floor_key()
                        .into_iter()
                        .chain([
                            ("c".to_string(), n(0)),
                            ("n".to_string(), n(0)),
                            ("t".to_string(), n(0)),
                            ("inc".to_string(), AttributeValue::S(incarnation.clone())),
                            ("j".to_string(), AttributeValue::M(HashMap::new())),
                            ("o".to_string(), AttributeValue::M(HashMap::new())),
                            ("s".to_string(), AttributeValue::M(HashMap::new())),
                            ("v".to_string(), AttributeValue::M(HashMap::new())),
                            ("ws".to_string(), AttributeValue::M(HashMap::new())),
                            ("wt".to_string(), AttributeValue::M(HashMap::new())),
                            ("wa".to_string(), AttributeValue::M(HashMap::new())),
                        ])
                        .collect(),
                ))
                .send()
                .await?;
            let started = Instant::now();
            let deadline = started + window;
            let writers: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let (client, table, incarnation) =
                        (client.clone(), table.to_string(), incarnation.clone());
                    tokio::spawn(async move {
                        let (mut count, mut trimmed, mut seen) = (0u64, 0u64, 0u64);
                        while Instant::now() < deadline {
                            let added = match form {
                                DynamoForm::Add => {
                                    plain_add(&client, &table, None).await?;
                                    true
                                }
                                DynamoForm::ConditionedAdd => {
                                    plain_add(&client, &table, Some(&incarnation)).await?;
                                    true
                                }
                                DynamoForm::ProviderWrite => {
                                    provider_add(&client, &table, &incarnation, writer, count + 1)
                                        .await?;
                                    true
                                }
                                DynamoForm::Slotted => {
                                    slotted_add(&client, &table, &incarnation, writer, count + 1)
                                        .await?;
                                    true
                                }
                                DynamoForm::Recorded => {
                                    let request = format!("{writer:x}.{count:x}");
                                    match recorded_add(
                                        &client,
                                        &table,
                                        &incarnation,
                                        &request,
                                        seen,
                                    )
                                    .await?
                                    {
                                        Some(applied) => {
                                            seen = applied;
                                            true
                                        }
                                        None => {
                                            let (applied, did_trim) =
                                                trim(&client, &table, &incarnation).await?;
                                            seen = applied;
                                            trimmed += u64::from(did_trim);
                                            false
                                        }
                                    }
                                }
                            };
                            count += u64::from(added);
                        }
                        anyhow::Ok((count, trimmed))
                    })
                })
                .collect();
            let mut counted = 0;
            for writer in futures::future::try_join_all(writers).await? {
                let (count, trimmed) = writer?;
                counted += count;
                trims += trimmed;
            }
            let rate = counted as f64 / started.elapsed().as_secs_f64();
            let total = number(&read_item(client, table).await?, "c")?;
            anyhow::ensure!(
                total == counted,
                "dynamodb floor: the counter is {total} after {counted} increments"
            );
            best[index] = best[index].max(rate);
        }
    }
    Ok(format!(
        "\n#### Exactly-once increments on DynamoDB, natively\n\n\
         | {WRITERS} native writers on one item | ok/s | of `UpdateItem ADD` |\n|---|---:|---:|\n\
         | `UpdateItem ADD` | {:.0} | 1.00 |\n\
         | `SET c = c + :d` conditioned on the incarnation (no record) | {:.0} | {:.2} |\n\
         | the same, recording the total in the writer's slot, conditioned on its sequence | {:.0} | {:.2} |\n\
         | the provider's own batch write of one increment (the slot, its use time, a new version, the range condition) | {:.0} | {:.2} |\n\
         | wasi-kv's `KvStore::increment` on {WRITERS} stores, one per process (the write above, through the host; no guest) | {:.0} | {:.2} |\n\
         | the same, recording the total under the request id ({RECORDS_KEPT} kept; {trims} trims over all rounds) | {:.0} | {:.2} |\n",
        best[0],
        best[1],
        best[1] / best[0],
        best[2],
        best[2] / best[0],
        best[3],
        best[3] / best[0],
        best_host,
        best_host / best[0],
        best[4],
        best[4] / best[0],
    ))
}

/// `ADD c :d`, or with an incarnation `SET c = c + :d` conditioned on it.
async fn plain_add(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    incarnation: Option<&str>,
) -> anyhow::Result<()> {
    let update = client
        .update_item()
        .table_name(table)
        .set_key(Some(floor_key()))
        .expression_attribute_values(":d", n(1))
        .return_values(ReturnValue::UpdatedNew);
    let update = match incarnation {
        None => update.update_expression("ADD c :d"),
        Some(incarnation) => update
            .update_expression("SET c = c + :d")
            .condition_expression("inc = :inc")
            .expression_attribute_values(":inc", AttributeValue::S(incarnation.to_string())),
    };
    update
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(err)))?;
    Ok(())
}

/// One add recorded in the writer's slot: `s.#w` its sequence, `v.#w` its total. Refused if
/// the slot holds this sequence or a later one, which never happens here (one request at a
/// time per writer), so a refusal is an error.
async fn slotted_add(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    incarnation: &str,
    writer: usize,
    sequence: u64,
) -> anyhow::Result<()> {
    client
        .update_item()
        .table_name(table)
        .set_key(Some(floor_key()))
        .update_expression("SET c = c + :d, s.#w = :seq, v.#w = c + :d")
        .condition_expression("inc = :inc AND (attribute_not_exists(s.#w) OR s.#w < :seq)")
        .expression_attribute_names("#w", format!("w{writer}"))
        .expression_attribute_values(":d", n(1))
        .expression_attribute_values(":seq", n(sequence))
        .expression_attribute_values(":inc", AttributeValue::S(incarnation.to_string()))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(err)))?;
    Ok(())
}

/// One increment as the provider writes a batch of one (`kv_aws::dynamodb::counter`): what
/// DynamoDB spends on the provider's exact request, without the host around it.
async fn provider_add(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    incarnation: &str,
    writer: usize,
    sequence: u64,
) -> anyhow::Result<()> {
    let known = kv_aws::dynamodb::counter::Known {
        incarnation: incarnation.to_string(),
        slot: (sequence > 1).then_some(sequence - 1),
        expires: false,
        removals: 0,
    };
    kv_aws::dynamodb::counter::batch_update(
        client
            .update_item()
            .table_name(table)
            .set_key(Some(floor_key())),
        &format!("w{writer}"),
        &known,
        sequence,
        1,
        i64::MIN,
        i64::MAX - 1,
        AttributeValue::S(format!("{:032x}", rand::random::<u128>())),
    )
    .send()
    .await
    .map_err(|err| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(err)))?;
    Ok(())
}

/// One add recorded under its request id: the item's `n` after it, or `None` when its condition failed (the
/// records are full, or were trimmed past `seen`).
async fn recorded_add(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    incarnation: &str,
    request: &str,
    seen: u64,
) -> anyhow::Result<Option<u64>> {
    let sent = client
        .update_item()
        .table_name(table)
        .set_key(Some(floor_key()))
        .update_expression("SET c = c + :d, n = n + :one, j.#r = c + :d, o.#r = n + :one")
        .condition_expression(
            "inc = :inc AND attribute_not_exists(j.#r) AND size(j) < :kept AND t <= :seen",
        )
        .expression_attribute_names("#r", request)
        .expression_attribute_values(":d", n(1))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":inc", AttributeValue::S(incarnation.to_string()))
        .expression_attribute_values(":kept", n(RECORDS_KEPT))
        .expression_attribute_values(":seen", n(seen))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await;
    match sent {
        Ok(output) => Ok(Some(number(&output.attributes.unwrap_or_default(), "n")?)),
        Err(err) if is_conditional_failure(&err) => Ok(None),
        Err(err) => Err(anyhow::anyhow!(
            "{}",
            aws_sdk_dynamodb::error::DisplayErrorContext(err)
        )),
    }
}

/// Reads the item and, when its records are full, removes the older half, conditioned on no
/// other trim in between: the item's `n`, and whether this call trimmed.
async fn trim(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    incarnation: &str,
) -> anyhow::Result<(u64, bool)> {
    let item = read_item(client, table).await?;
    let (applied, trimmed_to) = (number(&item, "n")?, number(&item, "t")?);
    let Some(AttributeValue::M(order)) = item.get("o") else {
        anyhow::bail!("dynamodb floor: the item has no records");
    };
    if order.len() < RECORDS_KEPT {
        return Ok((applied, false));
    }
    let cutoff = applied - (RECORDS_KEPT / 2) as u64;
    let mut update = client
        .update_item()
        .table_name(table)
        .set_key(Some(floor_key()))
        .condition_expression("inc = :inc AND t = :t")
        .expression_attribute_values(":inc", AttributeValue::S(incarnation.to_string()))
        .expression_attribute_values(":t", n(trimmed_to))
        .expression_attribute_values(":cutoff", n(cutoff));
    let mut removed = Vec::new();
    for (index, (request, at)) in order.iter().enumerate() {
        let AttributeValue::N(at) = at else {
            anyhow::bail!("dynamodb floor: the record of {request} is {at:?}");
        };
        if at.parse::<u64>()? <= cutoff {
            update = update.expression_attribute_names(format!("#r{index}"), request);
            removed.push(format!("j.#r{index}, o.#r{index}"));
        }
    }
    anyhow::ensure!(!removed.is_empty(), "dynamodb floor: nothing to trim");
    let update = update.update_expression(format!("SET t = :cutoff REMOVE {}", removed.join(", ")));
    match update.send().await {
        Ok(_) => Ok((applied, true)),
        Err(err) if is_conditional_failure(&err) => Ok((applied, false)),
        Err(err) => Err(anyhow::anyhow!(
            "{}",
            aws_sdk_dynamodb::error::DisplayErrorContext(err)
        )),
    }
}

async fn joined(writers: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>) -> anyhow::Result<u64> {
    let mut counted = 0;
    for writer in futures::future::try_join_all(writers).await? {
        counted += writer?;
    }
    Ok(counted)
}

/// The least a check of values' sizes on the Redis server costs: `MGET` of 100 keys of 256 B
/// against the same `MGET` called from a script that checks nothing, mean µs per call, best
/// of [`ROUNDS`]. Any check made on the server before values leave it runs in a script, so
/// the script's own cost bounds the byte-bounded `get-many` from below.
pub async fn redis_get_many_floor(url: &str, budget: Duration) -> anyhow::Result<String> {
    const KEYS: usize = 100;
    let mut connection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("floor-many-{i:03}")).collect();
    let mut seed = redis::cmd("MSET");
    for key in &keys {
        seed.arg(key).arg(&[7u8; 256][..]);
    }
    seed.query_async::<()>(&mut connection).await?;
    let script = redis::Script::new("return redis.call('MGET', unpack(KEYS))");
    let (mut plain, mut scripted) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        plain = plain.min(
            super::curves::mean_us(budget, || {
                let mut connection = connection.clone();
                let keys = &keys;
                async move {
                    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                        .arg(keys)
                        .query_async(&mut connection)
                        .await?;
                    anyhow::ensure!(values.iter().all(Option::is_some), "a key is missing");
                    Ok(())
                }
            })
            .await?,
        );
        scripted = scripted.min(
            super::curves::mean_us(budget, || {
                let (mut connection, script) = (connection.clone(), script.clone());
                let keys = &keys;
                async move {
                    let mut invocation = script.prepare_invoke();
                    for key in keys {
                        invocation.key(key);
                    }
                    let values: Vec<Option<Vec<u8>>> =
                        invocation.invoke_async(&mut connection).await?;
                    anyhow::ensure!(values.iter().all(Option::is_some), "a key is missing");
                    Ok(())
                }
            })
            .await?,
        );
    }
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut connection)
        .await?;
    Ok(format!(
        "\n| redis, {KEYS} keys of 256 B, native client | µs per call | over `MGET` |\n|---|---:|---:|\n\
         | `MGET` | {plain:.1} | |\n\
         | the same `MGET` from a script that checks nothing | {scripted:.1} | {:+.1}% |\n",
        (scripted / plain - 1.0) * 100.0
    ))
}
