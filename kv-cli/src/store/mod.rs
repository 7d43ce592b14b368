//! `wasi-kv store`: an operator's view of any configured store. Every command goes through
//! [`KvStore`], so keys, values, TTLs and access modes are checked as they are for a component
//! (docs/semantics.md), and a read-only store is never written.

pub mod checkpoint;
pub mod jsonl;
mod progress;
pub mod transfer;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kv_core::store::CursorSecret;
use kv_core::{KvStore, Stores};
use sha2::{Digest as _, Sha256};

use crate::cli::{StoreAction, StoreArgs, StoreCommand, StoreTarget};
use checkpoint::Checkpoint;
use transfer::{Comparison, CopyState};

/// Runs one `wasi-kv store` command; exit code 1 means "no" (a missing key, stores that
/// differ), errors are the caller's exit code 2.
pub async fn store(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command.action {
        StoreAction::Get { target, key } => {
            let (_, store) = open(&target).await?;
            match store.get(&key).await? {
                Some(value) => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&value)?;
                    if std::io::stdout().is_terminal() && !value.ends_with(b"\n") {
                        stdout.write_all(b"\n")?;
                    }
                    stdout.flush()?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("{key:?}: no such key in store {:?}", store.name());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        StoreAction::Set {
            target,
            key,
            value,
            ttl,
        } => {
            let value = kv_core::config::value_argument("the value", &value)?;
            let (_, store) = open(&target).await?;
            match ttl {
                Some(ttl) => {
                    store
                        .set_with_ttl(&key, value, transfer::ttl_millis(ttl))
                        .await?
                }
                None => store.set(&key, value).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::Delete { target, key } => {
            let (_, store) = open(&target).await?;
            store.delete(&key).await?;
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::Incr { target, key, delta } => {
            let (_, store) = open(&target).await?;
            println!("{}", store.increment(&key, delta).await?);
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::List {
            target,
            prefix,
            limit,
        } => {
            let (_, store) = open(&target).await?;
            quiet_on_closed_pipe(list(&store, prefix.as_deref(), limit).await)?;
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::Export {
            target,
            prefix,
            output,
            jobs,
        } => {
            let (_, store) = open(&target).await?;
            let jobs = jobs.get();
            let count = match output {
                None => {
                    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                    let exported = async {
                        let count =
                            transfer::export(&store, prefix.as_deref(), jobs, &mut stdout).await?;
                        stdout.flush()?;
                        Ok(count)
                    };
                    match quiet_on_closed_pipe(exported.await)? {
                        Some(count) => count,
                        // The reader stopped reading (`| head`): nothing more to say.
                        None => return Ok(ExitCode::SUCCESS),
                    }
                }
                Some(path) => export_to_file(&store, prefix.as_deref(), jobs, path).await?,
            };
            eprintln!("export: {count} keys from store {:?}", store.name());
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::Import {
            target,
            file,
            resume,
            state,
            jobs,
        } => {
            let (stores, store) = open(&target).await?;
            let identity = store_identity(&target.stores, store.name())?;
            let state = state.unwrap_or_else(|| {
                let mut name = file.clone().into_os_string();
                name.push(".import-state");
                PathBuf::from(name)
            });
            let imported = transfer::import(
                &store,
                &identity,
                stores.limits(),
                &file,
                &Checkpoint::at(state),
                resume,
                jobs.get(),
            )
            .await?;
            println!(
                "imported {} keys into store {:?} ({} written by this run{})",
                imported.keys,
                store.name(),
                imported.written,
                match imported.expired {
                    0 => String::new(),
                    n => format!(", {n} skipped: expired since the export"),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::Copy {
            stores,
            from,
            to,
            resume,
            state,
            jobs,
            no_verify,
        } => copy(stores, from, to, resume, state, jobs.get(), no_verify).await,
        StoreAction::Verify {
            stores,
            from,
            to,
            jobs,
        } => {
            let config = crate::load(&stores)?;
            let opened = crate::open_stores(&config.kv).await?;
            let (from, to) = pair(&stores, &opened, &from, &to).await?;
            let comparison = transfer::verify(&from, &to, jobs.get()).await?;
            Ok(report(&from, &to, &comparison))
        }
    }
}

/// The stores of `target` and the one it names.
async fn open(target: &StoreTarget) -> anyhow::Result<(Arc<Stores>, KvStore)> {
    let config = crate::load(&target.stores)?;
    let stores = crate::open_stores(&config.kv).await?;
    let name = match &target.bucket {
        Some(name) => name.clone(),
        None => {
            let names = stores.names();
            match names.as_slice() {
                [only] => only.to_string(),
                _ if names.contains(&"default") => "default".to_string(),
                _ => bail!(
                    "several stores are configured ({}): choose one with --bucket",
                    names.join(", ")
                ),
            }
        }
    };
    let store = stores
        .open(&name)
        .await
        .with_context(|| format!("store {name:?}"))?;
    Ok((stores, store))
}

/// Both stores of a copy or a comparison, refused when they are one store under two names.
async fn pair(
    args: &StoreArgs,
    stores: &Stores,
    from: &str,
    to: &str,
) -> anyhow::Result<(KvStore, KvStore)> {
    if from == to || store_identity(args, from)? == store_identity(args, to)? {
        bail!("{from:?} and {to:?} are the same store (the same backend and namespace)");
    }
    let source = stores
        .open(from)
        .await
        .with_context(|| format!("store {from:?}"))?;
    let destination = stores
        .open(to)
        .await
        .with_context(|| format!("store {to:?}"))?;
    Ok((source, destination))
}

async fn list(store: &KvStore, prefix: Option<&str>, limit: Option<u64>) -> anyhow::Result<()> {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor: Option<String> = None;
    let mut printed = 0;
    loop {
        let page = store.list_keys(cursor.as_deref()).await?;
        for key in page.keys {
            if limit.is_some_and(|limit| printed >= limit) {
                return Ok(stdout.flush()?);
            }
            if prefix.is_none_or(|prefix| key.starts_with(prefix)) {
                writeln!(stdout, "{key}")?;
                printed += 1;
            }
        }
        // Each page reaches the reader before the next is asked for.
        stdout.flush()?;
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// An export into `path`: a temporary file beside it, renamed over it once complete.
async fn export_to_file(
    store: &KvStore,
    prefix: Option<&str>,
    jobs: usize,
    path: PathBuf,
) -> anyhow::Result<u64> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let count = transfer::export(store, prefix, jobs, &mut out).await?;
    let file = out.into_inner().map_err(|err| err.into_error())?;
    file.as_file().sync_all()?;
    file.persist(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(count)
}

async fn copy(
    stores: StoreArgs,
    from: String,
    to: String,
    resume: bool,
    state: Option<PathBuf>,
    jobs: usize,
    no_verify: bool,
) -> anyhow::Result<ExitCode> {
    let checkpoint = Checkpoint::at(state.unwrap_or_else(|| {
        let safe = |name: &str| name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        PathBuf::from(format!("wasi-kv-copy-{}-{}.state", safe(&from), safe(&to)))
    }));
    let saved = if resume {
        checkpoint.load::<CopyState>()?
    } else {
        None
    };
    let identities = [
        store_identity(&stores, &from)?,
        store_identity(&stores, &to)?,
    ];
    let mut state = match saved {
        Some(saved) if saved.from == from && saved.to == to && saved.identities == identities => {
            eprintln!(
                "copy: resuming after {} keys ({})",
                saved.copied,
                checkpoint.path().display()
            );
            saved
        }
        Some(saved) => bail!(
            "{} is the checkpoint of a copy from {:?} to {:?} {}: remove it, or copy without \
             --resume",
            checkpoint.path().display(),
            saved.from,
            saved.to,
            if saved.from == from && saved.to == to {
                "with other backends or settings"
            } else {
                "(other stores)"
            }
        ),
        None => {
            if resume {
                eprintln!(
                    "copy: no checkpoint at {}, starting from the first key",
                    checkpoint.path().display()
                );
            }
            CopyState::new(&from, &to, identities)
        }
    };
    let mut config = crate::load(&stores)?;
    config.kv.cursor_secret = Some(
        CursorSecret::new(state.cursor_secret.clone())
            .context("the checkpoint's cursor secret is too short")?,
    );
    let opened = crate::open_stores(&config.kv).await?;
    let (source, destination) = pair(&stores, &opened, &from, &to).await?;
    let stores = opened;
    let written = transfer::copy(
        &source,
        &destination,
        stores.limits(),
        &mut state,
        &checkpoint,
        jobs,
    )
    .await?;
    println!(
        "copied {} keys from {from:?} to {to:?} ({written} written by this run)",
        state.copied
    );
    if no_verify {
        checkpoint.remove()?;
        return Ok(ExitCode::SUCCESS);
    }
    let comparison = transfer::verify(&source, &destination, jobs).await?;
    let code = report(&source, &destination, &comparison);
    // Every page was written: a copy run again starts over (rewriting every key) rather than
    // resuming into a verification only.
    checkpoint.remove()?;
    Ok(code)
}

/// Prints a comparison; exit code 1 when the stores differ.
fn report(from: &KvStore, to: &KvStore, comparison: &Comparison) -> ExitCode {
    println!(
        "verify: {:?} has {} keys (digest {}), {:?} has {}",
        from.name(),
        comparison.source_keys,
        comparison.digest,
        to.name(),
        comparison.destination_keys,
    );
    println!(
        "verify: {} differ in value or TTL or are missing, {} only in {:?}",
        comparison.differing,
        comparison.only_in_destination,
        to.name()
    );
    for example in &comparison.examples {
        println!("verify:   {example}");
    }
    if comparison.equal() {
        println!("verify: equal");
        ExitCode::SUCCESS
    } else {
        println!("verify: DIFFERENT");
        ExitCode::FAILURE
    }
}

/// Parts of a provider field's name that make it tuning (how the data is reached, never
/// where it is): changing one must not stop a resume.
const TUNING_FIELDS: [&str; 9] = [
    "timeout", "interval", "attempts", "backoff", "retry", "retries", "wait", "pool", "sweep",
];

/// Environment variables the AWS SDK reads for where requests go, when no field says.
const AWS_LOCATION_VARIABLES: [&str; 6] = [
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
];

/// What identifies store `name` across runs: where its data is, hashed — the provider, the
/// URL's host, port and path (a relative SQLite path made absolute against the working
/// directory), every provider field but tuning and secrets (so the table, bucket, container,
/// endpoint, region, profile and AWS access key id count), for AWS the environment variables
/// the SDK would take those from, and the namespace. When unsure it says "another store":
/// that only refuses a resume, where "the same store" could skip data.
pub fn store_identity(args: &StoreArgs, name: &str) -> anyhow::Result<String> {
    let config = crate::load(args)?;
    let spec = match config.kv.stores.get(name) {
        Some(spec) => spec.clone(),
        None if config.kv.stores.is_empty() && matches!(name, "default" | "") => {
            kv_core::config::parse_short_form("default=memory:")?.1
        }
        None => bail!("no store named {name:?} is configured"),
    };
    Ok(location_identity(&spec))
}

fn location_identity(spec: &kv_core::StoreSpec) -> String {
    let mut parts = vec![format!("provider={}", spec.provider)];
    if let Some(url) = &spec.url {
        let path = if spec.provider == "sqlite" {
            let path = std::path::Path::new(url.path());
            std::path::absolute(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string()
        } else {
            url.path().to_string()
        };
        parts.push(format!(
            "url={}://{}:{}{path}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|port| port.to_string()).unwrap_or_default()
        ));
    }
    let mut fields: Vec<String> = spec
        .provider_fields()
        .into_iter()
        .filter(|field| {
            let name = field.name.to_ascii_lowercase();
            let tuning = TUNING_FIELDS.iter().any(|part| name.contains(part));
            let secret = kv_core::config::is_secret_field(&name) && name != "access_key_id";
            !tuning && !secret
        })
        .map(|field| {
            let value = field.text().unwrap_or_else(|_| format!("{field:?}"));
            format!("{}={value}", field.name)
        })
        .collect();
    if matches!(spec.provider.as_str(), "dynamodb" | "s3") {
        for variable in AWS_LOCATION_VARIABLES {
            if let Ok(value) = std::env::var(variable) {
                fields.push(format!("${variable}={value}"));
            }
        }
    }
    fields.sort();
    parts.extend(fields);
    parts.push(format!("namespace={}", spec.namespace));
    let mut hash = Sha256::new();
    for part in &parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `Ok(None)` when the error is stdout closed by its reader (`| head`), which is no failure.
fn quiet_on_closed_pipe<T>(result: anyhow::Result<T>) -> anyhow::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err)
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(short_form: &str) -> String {
        let (_, spec) = kv_core::config::parse_short_form(short_form).unwrap();
        location_identity(&spec)
    }

    /// Where the data is decides; how it is reached does not.
    #[test]
    fn identity_is_where_the_data_is() {
        let cwd = std::env::current_dir().unwrap();
        let relative = identity("s=sqlite:data.db");
        assert_eq!(
            relative,
            identity(&format!("s=sqlite:{}", cwd.join("data.db").display()))
        );
        assert_ne!(relative, identity("s=sqlite:/elsewhere/data.db"));
        assert_eq!(relative, identity("s=sqlite:data.db?busy_timeout_ms=30000"));
        assert_ne!(relative, identity("t=sqlite:data.db"), "another namespace");
        let redis = identity("s=redis://:one@127.0.0.1:6379/0");
        assert_eq!(redis, identity("s=redis://:two@127.0.0.1:6379/0"));
        assert_ne!(redis, identity("s=redis://127.0.0.1:6379/1"));
        assert_ne!(redis, identity("s=redis://127.0.0.1:6380/0"));
        assert_ne!(
            identity("s=dynamodb://kv?region=eu-west-1"),
            identity("s=dynamodb://kv?region=us-east-1")
        );
        assert_eq!(
            identity("s=dynamodb://kv?region=eu-west-1&max_attempts=3"),
            identity("s=dynamodb://kv?region=eu-west-1")
        );
        // Another AWS account or profile is another table, whatever its name.
        assert_ne!(
            identity("s=dynamodb://kv?region=eu-west-1&profile=prod"),
            identity("s=dynamodb://kv?region=eu-west-1&profile=staging")
        );
        assert_ne!(
            identity("s=dynamodb://kv?region=eu-west-1&access_key_id=AKIAPROD&secret_access_key=x"),
            identity(
                "s=dynamodb://kv?region=eu-west-1&access_key_id=AKIASTAGE&secret_access_key=x"
            )
        );
        // A rotated secret is the same account.
        assert_eq!(
            identity("s=dynamodb://kv?region=eu-west-1&access_key_id=AKIA&secret_access_key=x"),
            identity("s=dynamodb://kv?region=eu-west-1&access_key_id=AKIA&secret_access_key=y")
        );
    }
}
