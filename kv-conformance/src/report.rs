//! Results and the report formats: console table, JSON, JUnit XML, a Markdown evidence page,
//! and the HTML page ([`crate::evidence`]).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How one case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// A check failed; the reason says which.
    Failed,
    /// Not run: a capability the provider does not declare, or a known divergence.
    Ignored,
}

impl Outcome {
    /// The word used in every format.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Ignored => "ignored",
        }
    }
}

/// The result of one case against one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    /// Target name.
    pub provider: String,
    /// Case name.
    pub case: String,
    /// Rules the case covers.
    pub rules: Vec<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Why it failed or was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall-clock time.
    pub duration_ms: u64,
}

/// A whole run, with the facts the Phase 4 evidence needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Provider name.
    pub provider: String,
    /// Backend flavour and version.
    pub backend: String,
    /// Host wasmtime version.
    pub wasmtime_version: String,
    /// WIT the suite is written against.
    pub wit_version: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Commit of this checkout, or `unknown`.
    pub commit: String,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// One entry per case.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// A report with the environment facts filled in.
    pub fn new(
        provider: &str,
        backend: &str,
        started_at: SystemTime,
        results: Vec<CaseResult>,
    ) -> Self {
        Report {
            provider: provider.to_string(),
            backend: backend.to_string(),
            wasmtime_version: crate::guests::WASMTIME_VERSION.to_string(),
            wit_version: "wasi:keyvalue@0.2.0-draft2 (+ 0.2.0-draft, wasi-kv:ttl@0.1.0)"
                .to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            commit: current_commit(),
            started_at: rfc3339(started_at),
            results,
        }
    }

    /// Writes `report.json`, `report.xml` (JUnit) and `report.md` (the evidence page) into
    /// `dir`, creating it.
    pub fn write_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (file, text) in [
            ("report.json", self.to_json()),
            ("report.xml", self.to_junit()),
            ("report.md", self.to_markdown()),
            (
                "report.html",
                crate::evidence::Evidence::of(self.clone()).to_html(),
            ),
        ] {
            std::fs::write(dir.join(file), text)?;
        }
        Ok(())
    }

    /// Count of results with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Whether the run counts as a pass: nothing failed and something passed.
    pub fn is_success(&self) -> bool {
        self.count(Outcome::Failed) == 0 && self.count(Outcome::Passed) > 0
    }

    /// The closing line: `N passed, N failed, N skipped`.
    pub fn summary_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.count(Outcome::Passed),
            self.count(Outcome::Failed),
            self.count(Outcome::Ignored)
        )
    }

    /// Console table.
    pub fn to_table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.case.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "conformance: provider {} ({})",
            self.provider, self.backend
        );
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:>8}  note",
            "case", "outcome", "ms"
        );
        let _ = writeln!(out, "{}", "-".repeat(width + 32));
        for r in &self.results {
            let note = r.reason.as_deref().unwrap_or("");
            let _ = writeln!(
                out,
                "{:<width$}  {:<8}  {:>8}  {}",
                r.case,
                r.outcome.as_str(),
                r.duration_ms,
                one_line(note, 160)
            );
        }
        let _ = writeln!(out, "{}", "-".repeat(width + 32));
        let _ = writeln!(out, "{}", self.summary_line());
        out
    }

    /// JSON (the format other tools read).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    }

    /// JUnit XML, one testcase per case.
    pub fn to_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let total_secs: f64 = self
            .results
            .iter()
            .map(|r| r.duration_ms as f64 / 1000.0)
            .sum();
        let _ = writeln!(
            out,
            "<testsuite name=\"wasi-kv conformance: {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\">",
            xml(&self.provider),
            self.results.len(),
            self.count(Outcome::Failed),
            self.count(Outcome::Ignored),
            total_secs,
            xml(&self.started_at)
        );
        for r in &self.results {
            let _ = write!(
                out,
                "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml(&r.provider),
                xml(&r.case),
                r.duration_ms as f64 / 1000.0
            );
            match r.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed => {
                    let reason = xml(r.reason.as_deref().unwrap_or(""));
                    let _ = writeln!(
                        out,
                        ">\n    <failure message=\"{reason}\">{reason}</failure>\n  </testcase>"
                    );
                }
                Outcome::Ignored => {
                    let reason = xml(r.reason.as_deref().unwrap_or(""));
                    let _ = writeln!(out, ">\n    <skipped message=\"{reason}\"/>\n  </testcase>");
                }
            }
        }
        out.push_str("</testsuite>\n");
        out
    }

    /// The Markdown evidence page.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# wasi-kv conformance evidence: {}\n", self.provider);
        let _ = writeln!(out, "| | |\n|---|---|");
        for (field, value) in [
            ("provider", &self.provider),
            ("backend", &self.backend),
            ("wasmtime", &self.wasmtime_version),
            ("WIT", &self.wit_version),
            ("OS / arch", &format!("{} / {}", self.os, self.arch)),
            ("commit", &self.commit),
            ("date", &self.started_at),
            ("result", &self.summary_line()),
        ] {
            let _ = writeln!(out, "| {field} | {} |", md(value));
        }
        let _ = writeln!(
            out,
            "\n| case | rules | outcome | ms | note |\n|---|---|---|---:|---|"
        );
        for r in &self.results {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                r.case,
                r.rules.join(" "),
                r.outcome.as_str(),
                r.duration_ms,
                md(&one_line(r.reason.as_deref().unwrap_or(""), 300))
            );
        }
        out
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// Text as XML or HTML (JUnit reports, the evidence page).
pub(crate) fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn md(text: &str) -> String {
    text.replace('|', "\\|")
}

fn current_commit() -> String {
    if let Ok(sha) = std::env::var("KV_COMMIT") {
        return sha;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// `2026-11-23T20:41:07Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Report {
        let result = |case: &str, outcome, reason: Option<&str>| CaseResult {
            provider: "memory".into(),
            case: case.into(),
            rules: vec!["S1".into()],
            outcome,
            reason: reason.map(String::from),
            duration_ms: 3,
        };
        Report::new(
            "memory",
            "in-memory",
            UNIX_EPOCH + Duration::from_secs(1_795_466_467),
            vec![
                result("a", Outcome::Passed, None),
                result("b", Outcome::Failed, Some("expected <1> & \"2\"")),
                result("c", Outcome::Ignored, Some("no ttl")),
            ],
        )
    }

    #[test]
    fn timestamp_is_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_466_467)),
            "2026-11-23T20:41:07Z"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        for field in [
            "wasmtime_version",
            "wit_version",
            "os",
            "arch",
            "commit",
            "started_at",
        ] {
            assert!(json[field].is_string(), "{field}");
        }
        let first = &json["results"][0];
        assert_eq!(first["provider"], "memory");
        assert_eq!(first["case"], "a");
        assert_eq!(first["outcome"], "passed");
        assert!(first["duration_ms"].is_u64());
        assert_eq!(json["results"][1]["outcome"], "failed");
        assert_eq!(json["results"][2]["reason"], "no ttl");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let xml = sample().to_junit();
        assert!(xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(xml.contains("expected &lt;1&gt; &amp; &quot;2&quot;"));
        assert!(xml.contains("<skipped message=\"no ttl\"/>"));
    }

    #[test]
    fn summary_and_success() {
        let report = sample();
        assert_eq!(report.summary_line(), "1 passed, 1 failed, 1 skipped");
        assert!(!report.is_success());
        assert!(report.to_markdown().contains("| `b` | S1 | failed |"));
    }
}
