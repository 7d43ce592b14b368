//! The report of one `wasi-kv check` run: what ran, what every client was told in total, what
//! the nemesis did, and the verdict with each anomaly's smallest failing history.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use kv_check::{History, Outcome, Validity, Verdict};
use serde::Serialize;

use super::{Event, Plan};

/// `valid`, `INVALID` or `unknown`: how reports and the command line name a verdict.
pub fn verdict_word(valid: Validity) -> &'static str {
    match valid {
        Validity::Valid => "valid",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "unknown",
    }
}

/// One run, checked.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Provider name.
    pub provider: String,
    /// The backend and its version.
    pub backend: String,
    /// Workload name.
    pub workload: String,
    /// Nemesis name.
    pub nemesis: String,
    /// In-process hosts × clients each, and host processes.
    pub hosts: u32,
    /// Clients per in-process host.
    pub clients: u32,
    /// Host processes running the workload component.
    pub processes: u32,
    /// The seed (a run repeats from it, up to timing).
    pub seed: u64,
    /// Seconds the clients ran.
    pub seconds: f64,
    /// Operations recorded (final reads included).
    pub ops: usize,
    /// Completed `ok`.
    pub ok: usize,
    /// Certainly not applied.
    pub fail: usize,
    /// Outcome unknown.
    pub info: usize,
    /// What the nemesis did, in order.
    pub events: Vec<Event>,
    /// The checkers' verdict.
    pub verdict: Verdict,
}

impl CheckReport {
    /// Counts `history`'s outcomes and puts the run together.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        provider: &str,
        backend: &str,
        plan: &Plan,
        hosts: u32,
        processes: u32,
        elapsed: Duration,
        history: &History,
        events: Vec<Event>,
        verdict: Verdict,
    ) -> CheckReport {
        let count =
            |pred: fn(&kv_check::Entry) -> bool| history.entries.iter().filter(|e| pred(e)).count();
        CheckReport {
            provider: provider.to_string(),
            backend: backend.to_string(),
            workload: plan.workload.to_string(),
            nemesis: plan.nemesis.to_string(),
            hosts,
            clients: plan.clients,
            processes,
            seed: plan.seed,
            seconds: elapsed.as_secs_f64(),
            ops: history.entries.len(),
            ok: count(|e| e.complete.is_some() && matches!(e.outcome, Outcome::Ok(_))),
            fail: count(|e| e.complete.is_some() && matches!(e.outcome, Outcome::Fail(_))),
            info: count(kv_check::Entry::is_info),
            events,
            verdict,
        }
    }

    /// Whether the history is valid (unknown is not).
    pub fn is_valid(&self) -> bool {
        self.verdict.valid == Validity::Valid
    }

    /// `valid`, `INVALID` or `unknown`.
    pub fn verdict_word(&self) -> &'static str {
        verdict_word(self.verdict.valid)
    }

    /// One line: provider, workload, nemesis, counts, verdict.
    pub fn summary_line(&self) -> String {
        format!(
            "{} {} × {}: {} ops ({} ok, {} fail, {} info) in {:.1} s, {} nemesis events: {}",
            self.provider,
            self.workload,
            self.nemesis,
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.seconds,
            self.events.len(),
            self.verdict_word()
        )
    }

    /// A markdown table row: provider, workload, nemesis, ops, ok, fail, info, verdict.
    pub fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.provider,
            self.workload,
            self.nemesis,
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.verdict_word()
        )
    }

    /// The header of [`CheckReport::table_row`].
    pub const TABLE_HEADER: &'static str = "| provider | workload | nemesis | ops | ok | fail | info | verdict |\n|---|---|---|---:|---:|---:|---:|---|";

    /// The whole report as markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# wasi-kv check: {}\n", self.provider);
        let _ = writeln!(out, "- backend: {}", self.backend);
        let _ = writeln!(
            out,
            "- workload {}, nemesis {}, {} host(s) × {} clients, {} host process(es), seed {}",
            self.workload, self.nemesis, self.hosts, self.clients, self.processes, self.seed
        );
        let _ = writeln!(out, "- verdict: **{}**\n", self.verdict_word());
        let _ = writeln!(out, "{}\n{}\n", Self::TABLE_HEADER, self.table_row());
        if !self.events.is_empty() {
            let _ = writeln!(
                out,
                "## Nemesis\n\n| at (s) | action | fault | detail |\n|---:|---|---|---|"
            );
            for event in &self.events {
                let _ = writeln!(
                    out,
                    "| {:.3} | {} | {} | {} |",
                    event.at as f64 / 1e9,
                    event.action,
                    event.nemesis,
                    event.detail
                );
            }
            out.push('\n');
        }
        if !self.verdict.unknown_keys.is_empty()
            || !self.verdict.counters_by_bounds.is_empty()
            || !self.verdict.anomalies.is_empty()
        {
            let _ = writeln!(out, "## Verdict\n\n```text\n{}```", self.verdict);
        }
        out
    }

    /// The whole report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }

    /// Writes `check.md`, `check.json`, `history.jsonl` and, per anomaly, its sub-history as
    /// `anomaly-N.json` into `dir`.
    pub fn write_dir(&self, dir: &Path, history: &History) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("check.md"), self.to_markdown())?;
        std::fs::write(dir.join("check.json"), self.to_json())?;
        let jsonl = history.to_jsonl().map_err(std::io::Error::other)?;
        std::fs::write(dir.join("history.jsonl"), jsonl)?;
        for (i, anomaly) in self.verdict.anomalies.iter().enumerate() {
            let json = anomaly
                .sub_history()
                .to_json()
                .map_err(std::io::Error::other)?;
            std::fs::write(dir.join(format!("anomaly-{}.json", i + 1)), json)?;
        }
        Ok(())
    }
}
