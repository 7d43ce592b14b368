//! Nemeses: the faults a history run injects while clients work, each on loopback only.
//!
//! Network faults go through the fault proxy between host and backend (`kv-testkit`'s
//! [`FaultProxy`]), or, for providers without a network (memory, SQLite), through the same
//! faults injected in process ([`LossyState`]). Crashes kill the backend with `SIGKILL` and
//! start it again on its data ([`Crashable`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kv_testkit::emulator::Crashable;
use kv_testkit::faults::{Fault, FaultProxy, LossyState};

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NemesisKind {
    /// No faults: the baseline.
    None,
    /// Every third request is executed by the backend and its reply dropped.
    DropReply,
    /// Every third request is dropped before the backend (the connection is reset): nothing
    /// applied, and the client cannot tell.
    DropRequest,
    /// Nothing reaches the backend for 1–5 s; requests sent meanwhile are never answered.
    Partition,
    /// The backend is killed with `SIGKILL` and restarted on its data (a cluster loses a
    /// primary to failover).
    Crash,
    /// A host process running the workload component is killed with `SIGKILL` mid-operation
    /// (it stays down; its last operation stays `info`).
    KillHost,
    /// Each of the others in turn.
    All,
}

impl NemesisKind {
    /// Every kind, in the order `All` cycles through them (after `None`).
    pub const ALL: [NemesisKind; 7] = [
        NemesisKind::None,
        NemesisKind::DropReply,
        NemesisKind::DropRequest,
        NemesisKind::Partition,
        NemesisKind::Crash,
        NemesisKind::KillHost,
        NemesisKind::All,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::DropReply => "drop-reply",
            NemesisKind::DropRequest => "drop-request",
            NemesisKind::Partition => "partition",
            NemesisKind::Crash => "crash",
            NemesisKind::KillHost => "kill-host",
            NemesisKind::All => "all",
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NemesisKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = NemesisKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown nemesis {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// Where network faults are injected.
#[derive(Clone)]
pub enum Network {
    /// None can be: the hosts talk to the backend directly (a cluster client reaches every
    /// node, or the store is not one this process started).
    Direct,
    /// The fault proxy every host's connection goes through.
    Proxy(Arc<FaultProxy>),
    /// In process, in front of the provider (memory, SQLite).
    InProcess(Arc<LossyState>),
}

/// What a run can break: its network and, when started durable, its backend.
#[derive(Clone)]
pub struct Faults {
    /// Where network faults go.
    pub network: Network,
    /// The backend's kill switch, when it keeps its data across a restart.
    pub crash: Option<Arc<dyn Crashable>>,
    /// Kills one host process, when the run has them.
    pub kill_host: Option<Arc<dyn Crashable>>,
}

/// One fault of a run, as it happened: when (nanoseconds on the history's timeline) and what.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    /// When it happened, on the history's clock.
    pub at: u64,
    /// `inject` or `heal`.
    pub action: &'static str,
    /// The fault.
    #[serde(serialize_with = "by_name")]
    pub nemesis: NemesisKind,
    /// What was done, or why it could not be.
    pub detail: String,
}

fn by_name<S: serde::Serializer>(kind: &NemesisKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// One reply in three is dropped or refused while a fault is on.
const EVERY: u64 = 3;

impl Faults {
    /// No faults possible.
    pub fn none() -> Faults {
        Faults {
            network: Network::Direct,
            crash: None,
            kill_host: None,
        }
    }

    /// Why `kind` cannot run here, if it cannot.
    pub fn unsupported(&self, kind: NemesisKind) -> Option<String> {
        let network = !matches!(self.network, Network::Direct);
        match kind {
            NemesisKind::None | NemesisKind::All => None,
            NemesisKind::DropReply | NemesisKind::DropRequest | NemesisKind::Partition
                if !network =>
            {
                Some(format!(
                    "{kind} needs the fault proxy (a local emulator this process started, one \
                     address) or an in-process provider"
                ))
            }
            NemesisKind::Crash if self.crash.is_none() => Some(
                "crash needs a backend started durable by this process (Redis with an \
                 append-only file, Redis Cluster, DynamoDB Local on -dbPath, fake-gcs-server on \
                 its filesystem backend)"
                    .to_string(),
            ),
            NemesisKind::KillHost if self.kill_host.is_none() => {
                Some("kill-host needs host processes (--processes)".to_string())
            }
            _ => None,
        }
    }

    /// The kinds `All` cycles through here.
    pub fn cycle(&self) -> Vec<NemesisKind> {
        [
            NemesisKind::DropReply,
            NemesisKind::DropRequest,
            NemesisKind::Partition,
            NemesisKind::Crash,
            NemesisKind::KillHost,
        ]
        .into_iter()
        .filter(|kind| self.unsupported(*kind).is_none())
        .collect()
    }

    /// How long a fault of `kind` stays on, from a roll in 0..1000.
    pub fn window(kind: NemesisKind, roll: u64) -> Duration {
        match kind {
            // 1–5 s, as Jepsen's partitions in small runs.
            NemesisKind::Partition => Duration::from_millis(1000 + roll * 4),
            _ => Duration::from_millis(1000 + roll),
        }
    }

    /// Turns `kind` on.
    pub async fn inject(&self, kind: NemesisKind) -> Result<String, String> {
        match (kind, &self.network) {
            (NemesisKind::DropReply, Network::Proxy(proxy)) => {
                proxy.every(EVERY, Fault::DropReply);
                Ok(format!(
                    "every {EVERY}rd reply dropped after the backend executed it"
                ))
            }
            (NemesisKind::DropReply, Network::InProcess(state)) => {
                state.lose_every(EVERY);
                Ok(format!(
                    "every {EVERY}rd reply lost after the store applied it"
                ))
            }
            (NemesisKind::DropRequest, Network::Proxy(proxy)) => {
                proxy.every(EVERY, Fault::ResetBeforeForward);
                Ok(format!(
                    "every {EVERY}rd request's connection reset before the backend"
                ))
            }
            (NemesisKind::DropRequest, Network::InProcess(state)) => {
                state.refuse_every(EVERY);
                Ok(format!("every {EVERY}rd request lost before the store"))
            }
            (NemesisKind::Partition, Network::Proxy(proxy)) => {
                proxy.every(1, Fault::Stall);
                Ok("partition: no request reaches the backend or is answered".to_string())
            }
            (NemesisKind::Partition, Network::InProcess(state)) => {
                state.partition(true);
                Ok("partition: no request reaches the store".to_string())
            }
            (NemesisKind::Crash, _) => match &self.crash {
                Some(crash) => blocking(crash.clone(), |c| c.crash()).await,
                None => Err(self.unsupported(kind).unwrap_or_default()),
            },
            (NemesisKind::KillHost, _) => match &self.kill_host {
                Some(kill) => blocking(kill.clone(), |c| c.crash()).await,
                None => Err(self.unsupported(kind).unwrap_or_default()),
            },
            (NemesisKind::None | NemesisKind::All, _) => Ok(String::new()),
            (_, Network::Direct) => Err(self.unsupported(kind).unwrap_or_default()),
        }
    }

    /// Turns `kind` off.
    pub async fn heal(&self, kind: NemesisKind) -> Result<String, String> {
        match (kind, &self.network) {
            (NemesisKind::KillHost, _) => Ok("the killed host stays down".to_string()),
            (NemesisKind::Crash, _) => match &self.crash {
                Some(crash) => blocking(crash.clone(), |c| c.recover()).await,
                None => Ok(String::new()),
            },
            (_, Network::Proxy(proxy)) => {
                proxy.clear();
                Ok("healed: every request forwarded".to_string())
            }
            (_, Network::InProcess(state)) => {
                state.lose_every(0);
                state.refuse_every(0);
                state.partition(false);
                Ok("healed".to_string())
            }
            (_, Network::Direct) => Ok(String::new()),
        }
    }
}

async fn blocking(
    crash: Arc<dyn Crashable>,
    action: fn(&dyn Crashable) -> Result<String, String>,
) -> Result<String, String> {
    tokio::task::spawn_blocking(move || action(&*crash))
        .await
        .map_err(|err| format!("the crash task failed: {err}"))?
}
