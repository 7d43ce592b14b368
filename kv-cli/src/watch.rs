//! `wasi-kv watch`: a `watch-service` component called for every change of the watched
//! stores (docs/watch.md). Delivery (order, checkpoints, retries, dead letters, resync) is
//! `kv-watch`'s, and so is running the component under its limits
//! (`kv_watch::component`); this module turns the command's options into them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kv_core::Stores;
use kv_watch::component::{CallLimits, WatchPlan, WatcherComponent};

pub use kv_watch::component::Watching;

/// One `wasi-kv watch`.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The component file.
    pub component: PathBuf,
    /// Names the watcher in checkpoint and dead-letter keys (default: the file's stem).
    pub name: Option<String>,
    /// The stores whose changes are delivered.
    pub watched: Vec<String>,
    /// The store keeping checkpoints (and, by default, dead letters).
    pub state: String,
    /// The store receiving dead letters; `None`: the state store.
    pub dead_letters: Option<String>,
    /// `NAME=VALUE` pairs for the component.
    pub envs: Vec<String>,
    /// Longest one `on-set` or `on-delete` may run.
    pub time_limit: Duration,
    /// Most linear memory the component may use.
    pub memory_limit: usize,
    /// Reads, retries and backoff.
    pub delivery: kv_watch::WatchOptions,
}

/// Compiles the component, opens the stores and takes each watched store's starting position
/// (its checkpoint, or its head now): every change made after this returns is delivered by
/// [`Watching::run`].
pub async fn start(options: &WatchOptions, stores: Arc<Stores>) -> anyhow::Result<Watching> {
    let mut envs = Vec::new();
    for pair in &options.envs {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected NAME=VALUE"))?;
        envs.push((name.to_string(), value.to_string()));
    }
    let component = WatcherComponent::from_file(
        &options.component,
        CallLimits {
            time_limit: options.time_limit,
            memory_limit: options.memory_limit,
            envs,
        },
    )?;
    let plan = WatchPlan {
        name: watcher_name(options)?,
        watched: options.watched.clone(),
        state: options.state.clone(),
        dead_letters: options.dead_letters.clone(),
        delivery: options.delivery.clone(),
    };
    Watching::start(Arc::new(component), &plan, stores).await
}

/// The watcher's name: `--name`, or the component file's stem.
fn watcher_name(options: &WatchOptions) -> anyhow::Result<String> {
    let name = match &options.name {
        Some(name) => name.clone(),
        None => options
            .component
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "watcher".to_string()),
    };
    if name.is_empty() || name.contains('/') {
        bail!("--name {name:?}: a watcher's name is not empty and has no '/'");
    }
    Ok(name)
}
