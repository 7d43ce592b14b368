//! The evidence as one HTML page: every provider's and platform's conformance report side by
//! side (a case × provider matrix with each skip's reason), the environment each ran in, and
//! the fault-matrix and history-check verdicts found beside them. Plain HTML and CSS, no
//! script, readable printed.
//!
//! [`Evidence::load`] reads what `wasi-kv conformance --report-dir`, the fault tests
//! (`faults/PROVIDER.md`) and `wasi-kv check --report-dir` (`histories/PROVIDER/check.json`)
//! write; `wasi-kv report DIR…` renders it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::report::{Outcome, Report, xml as escape};

/// docs/semantics.md, for the anchors of its rules.
const SEMANTICS: &str = include_str!("../../docs/semantics.md");

/// Where the rules' text is published.
const REPOSITORY: &str = "https://github.com/wasi-kv/wasi-kv";

/// One fault matrix (`faults/PROVIDER.md`): a Markdown table.
#[derive(Debug, Clone)]
pub struct FaultMatrix {
    /// The provider.
    pub provider: String,
    /// The table, as written.
    pub markdown: String,
}

/// One history check (`check.json` of `wasi-kv check --report-dir`).
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryCheck {
    /// The provider.
    pub provider: String,
    /// Backend and version.
    #[serde(default)]
    pub backend: String,
    /// The workload.
    pub workload: String,
    /// The faults injected.
    pub nemesis: String,
    /// Operations recorded.
    pub ops: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that certainly failed.
    pub fail: u64,
    /// Operations whose outcome is unknown.
    pub info: u64,
    /// The checker's verdict.
    pub verdict: Verdict,
}

/// A history checker's verdict.
#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    /// Whether every check held.
    pub valid: bool,
    /// What did not hold.
    #[serde(default)]
    pub anomalies: Vec<serde_json::Value>,
}

/// Everything one page shows.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Conformance reports, one per provider and platform.
    pub reports: Vec<Report>,
    /// Fault matrices.
    pub faults: Vec<FaultMatrix>,
    /// History checks.
    pub histories: Vec<HistoryCheck>,
}

impl Evidence {
    /// The page of one report.
    pub fn of(report: Report) -> Evidence {
        Evidence {
            reports: vec![report],
            ..Evidence::default()
        }
    }

    /// Everything under `dirs` (searched recursively): `report.json`, `faults/*.md`,
    /// `check.json`. A file that cannot be read or parsed is an error naming it.
    pub fn load(dirs: &[PathBuf]) -> Result<Evidence, String> {
        let mut files = Vec::new();
        for dir in dirs {
            if !dir.is_dir() {
                return Err(format!("{}: not a directory", dir.display()));
            }
            walk(dir, &mut files)?;
        }
        files.sort();
        let mut evidence = Evidence::default();
        for file in files {
            let name = file
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            let in_faults = file
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|dir| dir == "faults");
            let read = || {
                std::fs::read_to_string(&file).map_err(|err| format!("{}: {err}", file.display()))
            };
            if name == "report.json" {
                let report: Report = serde_json::from_str(&read()?)
                    .map_err(|err| format!("{}: {err}", file.display()))?;
                evidence.reports.push(report);
            } else if name == "check.json" {
                let check: HistoryCheck = serde_json::from_str(&read()?)
                    .map_err(|err| format!("{}: {err}", file.display()))?;
                evidence.histories.push(check);
            } else if in_faults && name.ends_with(".md") {
                evidence.faults.push(FaultMatrix {
                    provider: name.trim_end_matches(".md").to_string(),
                    markdown: read()?,
                });
            }
        }
        if evidence.reports.is_empty()
            && evidence.faults.is_empty()
            && evidence.histories.is_empty()
        {
            return Err(format!(
                "no report.json, faults/*.md or check.json under {}",
                dirs.iter()
                    .map(|dir| dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(evidence)
    }

    /// The page.
    pub fn to_html(&self) -> String {
        let mut page = String::new();
        let _ = self.write_html(&mut page);
        page
    }

    fn write_html(&self, out: &mut String) -> std::fmt::Result {
        let anchors = rule_anchors();
        writeln!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>wasi-kv conformance evidence</title>\n<style>{STYLE}</style>\n</head>\n<body>"
        )?;
        writeln!(out, "<h1>wasi-kv conformance evidence</h1>")?;
        if !self.reports.is_empty() {
            self.write_summary(out)?;
            self.write_environment(out)?;
            self.write_matrix(out, &anchors)?;
        }
        if !self.histories.is_empty() {
            self.write_histories(out)?;
        }
        if !self.faults.is_empty() {
            writeln!(out, "<h2 id=\"faults\">Fault matrices</h2>")?;
            writeln!(
                out,
                "<p>Every operation with each fault injected at the request, by a loopback \
                 proxy in front of the backend (docs/reliability.md).</p>"
            )?;
            for matrix in &self.faults {
                writeln!(out, "<h3>{}</h3>", escape(&matrix.provider))?;
                write_markdown_table(out, &matrix.markdown)?;
            }
        }
        writeln!(out, "</body>\n</html>")
    }

    /// Column titles: the provider, and the platform where more than one ran.
    fn columns(&self) -> Vec<String> {
        let platforms: std::collections::BTreeSet<(&str, &str)> = self
            .reports
            .iter()
            .map(|report| (report.os.as_str(), report.arch.as_str()))
            .collect();
        self.reports
            .iter()
            .map(|report| {
                if platforms.len() > 1 {
                    format!("{} ({})", report.provider, report.os)
                } else {
                    report.provider.clone()
                }
            })
            .collect()
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "<h2 id=\"summary\">Summary</h2>\n<table class=\"summary\">"
        )?;
        writeln!(
            out,
            "<thead><tr><th>provider</th><th>passed</th><th>failed</th><th>skipped</th>\
             <th>verdict</th></tr></thead><tbody>"
        )?;
        for (report, column) in self.reports.iter().zip(self.columns()) {
            let verdict = if report.is_success() { "pass" } else { "fail" };
            writeln!(
                out,
                "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td class=\"{verdict}\">{verdict}</td></tr>",
                escape(&column),
                report.count(Outcome::Passed),
                report.count(Outcome::Failed),
                report.count(Outcome::Ignored),
            )?;
        }
        writeln!(out, "</tbody></table>")
    }

    fn write_environment(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "<h2 id=\"environment\">Environment</h2>\n<table class=\"environment\">"
        )?;
        writeln!(
            out,
            "<thead><tr><th>provider</th><th>backend</th><th>OS</th><th>wasmtime</th>\
             <th>WIT</th><th>commit</th><th>date</th></tr></thead><tbody>"
        )?;
        for (report, column) in self.reports.iter().zip(self.columns()) {
            let commit: String = report.commit.chars().take(12).collect();
            writeln!(
                out,
                "<tr><th>{}</th><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                escape(&column),
                escape(&report.backend),
                escape(&report.os),
                escape(&report.arch),
                escape(&report.wasmtime_version),
                escape(&report.wit_version),
                escape(&commit),
                escape(&report.started_at),
            )?;
        }
        writeln!(out, "</tbody></table>")
    }

    fn write_matrix(
        &self,
        out: &mut String,
        anchors: &BTreeMap<String, String>,
    ) -> std::fmt::Result {
        // Cases in the order they first appear; each report's result by case.
        let mut cases: Vec<(&str, &[String])> = Vec::new();
        let mut results: Vec<BTreeMap<&str, &crate::report::CaseResult>> = Vec::new();
        for report in &self.reports {
            let mut by_case = BTreeMap::new();
            for result in &report.results {
                if !cases.iter().any(|(case, _)| *case == result.case) {
                    cases.push((&result.case, &result.rules));
                }
                by_case.insert(result.case.as_str(), result);
            }
            results.push(by_case);
        }
        let commit = self
            .reports
            .first()
            .map(|report| report.commit.as_str())
            .filter(|commit| commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or("main");
        writeln!(out, "<h2 id=\"matrix\">Cases</h2>")?;
        writeln!(
            out,
            "<p class=\"legend\"><span class=\"pass\">✓ passed</span> \
             <span class=\"fail\">✗ failed</span> <span class=\"skip\">– skipped</span> \
             (the numbered notes below give each failure's and skip's reason)</p>"
        )?;
        writeln!(
            out,
            "<table class=\"matrix\"><thead><tr><th>case</th><th>rules</th>"
        )?;
        for column in self.columns() {
            write!(out, "<th class=\"provider\">{}</th>", escape(&column))?;
        }
        writeln!(out, "</tr></thead><tbody>")?;
        let mut notes: Vec<String> = Vec::new();
        for (case, rules) in &cases {
            write!(
                out,
                "<tr><th class=\"case\">{}</th><td class=\"rules\">",
                escape(case)
            )?;
            for (index, rule) in rules.iter().enumerate() {
                if index > 0 {
                    write!(out, " ")?;
                }
                match anchors.get(rule) {
                    Some(anchor) => write!(
                        out,
                        "<a href=\"{REPOSITORY}/blob/{commit}/docs/semantics.md#{anchor}\">{}</a>",
                        escape(rule)
                    )?,
                    None => write!(out, "{}", escape(rule))?,
                }
            }
            write!(out, "</td>")?;
            for by_case in &results {
                match by_case.get(case) {
                    None => write!(out, "<td class=\"absent\" title=\"not run\"></td>")?,
                    Some(result) => {
                        let (class, mark) = match result.outcome {
                            Outcome::Passed => ("pass", "✓"),
                            Outcome::Failed => ("fail", "✗"),
                            Outcome::Ignored => ("skip", "–"),
                        };
                        match &result.reason {
                            Some(reason) if result.outcome != Outcome::Passed => {
                                let number = match notes.iter().position(|note| note == reason) {
                                    Some(position) => position + 1,
                                    None => {
                                        notes.push(reason.clone());
                                        notes.len()
                                    }
                                };
                                write!(
                                    out,
                                    "<td class=\"{class}\" title=\"{}\">{mark}<sup>{number}</sup></td>",
                                    escape(reason)
                                )?
                            }
                            _ => write!(out, "<td class=\"{class}\">{mark}</td>")?,
                        }
                    }
                }
            }
            writeln!(out, "</tr>")?;
        }
        writeln!(out, "</tbody></table>")?;
        if !notes.is_empty() {
            writeln!(out, "<ol class=\"notes\">")?;
            for note in &notes {
                writeln!(out, "<li>{}</li>", escape(note))?;
            }
            writeln!(out, "</ol>")?;
        }
        Ok(())
    }

    fn write_histories(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "<h2 id=\"histories\">History checks</h2>")?;
        writeln!(
            out,
            "<p>Concurrent clients' operations recorded under faults and checked for \
             linearizability per key, exact counters and complete listings \
             (<code>wasi-kv check</code>).</p>"
        )?;
        writeln!(
            out,
            "<table class=\"histories\"><thead><tr><th>provider</th><th>backend</th>\
             <th>workload</th><th>nemesis</th><th>ops</th><th>ok</th><th>fail</th>\
             <th>unknown</th><th>verdict</th></tr></thead><tbody>"
        )?;
        for check in &self.histories {
            let (class, verdict) = if check.verdict.valid {
                ("pass", "valid".to_string())
            } else {
                (
                    "fail",
                    format!("invalid ({} anomalies)", check.verdict.anomalies.len()),
                )
            };
            writeln!(
                out,
                "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=\"{class}\">{verdict}</td></tr>",
                escape(&check.provider),
                escape(&check.backend),
                escape(&check.workload),
                escape(&check.nemesis),
                check.ops,
                check.ok,
                check.fail,
                check.info,
            )?;
        }
        writeln!(out, "</tbody></table>")
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|err| format!("{}: {err}", dir.display()))?;
        let kind = entry
            .file_type()
            .map_err(|err| format!("{}: {err}", entry.path().display()))?;
        // A linked directory is not followed: a link back up would be read again and again.
        if kind.is_dir() {
            walk(&entry.path(), files)?;
        } else if !kind.is_symlink() || entry.path().is_file() {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// The anchor of each rule's heading in docs/semantics.md, as GitHub writes it (`## S9 TTL`
/// → `s9-ttl`).
pub fn rule_anchors() -> BTreeMap<String, String> {
    SEMANTICS
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .filter_map(|heading| {
            let rule = heading.split_whitespace().next()?;
            let numbered = rule.len() > 1
                && rule.starts_with('S')
                && rule[1..].chars().all(|c| c.is_ascii_digit());
            numbered.then(|| (rule.to_string(), github_anchor(heading)))
        })
        .collect()
}

fn github_anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A Markdown pipe table as an HTML table (other lines as paragraphs).
fn write_markdown_table(out: &mut String, markdown: &str) -> std::fmt::Result {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_string())
            .collect()
    };
    let mut in_table = false;
    let mut header_done = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('|') {
            if !in_table {
                writeln!(out, "<table class=\"faults\">")?;
                in_table = true;
                header_done = false;
            }
            let row = cells(trimmed);
            if row
                .iter()
                .all(|cell| cell.chars().all(|c| matches!(c, '-' | ':')))
            {
                continue;
            }
            let tag = if header_done { "td" } else { "th" };
            write!(out, "<tr>")?;
            for (index, cell) in row.iter().enumerate() {
                let tag = if index == 0 { "th" } else { tag };
                let class = if cell.starts_with("ok") {
                    " class=\"pass\""
                } else if !header_done || index == 0 {
                    ""
                } else {
                    " class=\"fail\""
                };
                write!(out, "<{tag}{class}>{}</{tag}>", escape(cell))?;
            }
            writeln!(out, "</tr>")?;
            header_done = true;
        } else {
            if in_table {
                writeln!(out, "</table>")?;
                in_table = false;
            }
            if !trimmed.is_empty() {
                writeln!(
                    out,
                    "<p>{}</p>",
                    escape(trimmed.trim_start_matches('#').trim())
                )?;
            }
        }
    }
    if in_table {
        writeln!(out, "</table>")?;
    }
    Ok(())
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: left; vertical-align: top; }
thead th { background: #eee; }
th.provider { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
th.case { font-weight: normal; font-family: ui-monospace, monospace; font-size: 0.9em; }
td.rules a { color: #036; }
td.pass, td.fail, td.skip, td.absent { text-align: center; }
.pass { background: #d9f2d9; color: #075207; }
.fail { background: #f8d0d0; color: #8a0b0b; font-weight: bold; }
.skip { background: #e8e8e8; color: #555; }
.legend span { padding: 0 0.4em; }
ol.notes { font-size: 0.9em; }
table.faults td, table.faults th { font-size: 0.85em; }
@media print {
  body { margin: 0; font-size: 9pt; }
  a { color: inherit; text-decoration: none; }
  tr, td, th { page-break-inside: avoid; }
  thead { display: table-header-group; }
  .pass, .fail, .skip, thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::CaseResult;

    fn report(provider: &str, os: &str, outcomes: &[(&str, Outcome, Option<&str>)]) -> Report {
        let mut report = Report::new(
            provider,
            "backend <v1>",
            std::time::SystemTime::now(),
            vec![],
        );
        report.os = os.to_string();
        report.results = outcomes
            .iter()
            .map(|(case, outcome, reason)| CaseResult {
                provider: provider.to_string(),
                case: case.to_string(),
                rules: vec!["S1".to_string(), "S9".to_string()],
                outcome: *outcome,
                reason: reason.map(str::to_string),
                duration_ms: 1,
            })
            .collect();
        report
    }

    /// A fault matrix as the fault tests write it: a header row, cells marked by outcome,
    /// the text around it kept.
    #[test]
    fn fault_tables_become_html() {
        let mut out = String::new();
        write_markdown_table(
            &mut out,
            "# redis\n\n| fault | set | get |\n|---|---|---|\n\
             | reply dropped | ok (5 ms) | lost <write> |\n",
        )
        .unwrap();
        assert!(out.contains("<p>redis</p>"), "{out}");
        assert!(
            out.contains("<tr><th>fault</th><th>set</th><th>get</th></tr>"),
            "{out}"
        );
        assert!(
            out.contains("<th>reply dropped</th><td class=\"pass\">ok (5 ms)</td>"),
            "{out}"
        );
        assert!(
            out.contains("<td class=\"fail\">lost &lt;write&gt;</td>"),
            "{out}"
        );
        assert_eq!(out.matches("<table").count(), 1);
    }

    /// Loading follows no linked directory: a link back up is not read again and again.
    #[cfg(unix)]
    #[test]
    fn load_skips_linked_directories() {
        let dir = tempfile::tempdir().unwrap();
        let faults = dir.path().join("faults");
        std::fs::create_dir(&faults).unwrap();
        std::fs::write(
            faults.join("redis.md"),
            "| fault | set |\n|---|---|\n| x | ok |\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path(), faults.join("up")).unwrap();
        let evidence = Evidence::load(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(evidence.faults.len(), 1);
        assert!(Evidence::load(&[faults.join("missing")]).is_err());
    }

    /// Every rule heading has an anchor; reasons become numbered notes, shared when equal;
    /// text is escaped; platforms are named once more than one ran.
    #[test]
    fn matrix_anchors_notes_and_escaping() {
        let anchors = rule_anchors();
        assert_eq!(anchors["S1"], "s1-keys");
        assert_eq!(anchors["S9"], "s9-ttl-wasi-kvttl010");
        assert!(
            (1..=12).all(|n| anchors.contains_key(&format!("S{n}"))),
            "{anchors:?}"
        );
        let evidence = Evidence {
            reports: vec![
                report(
                    "memory",
                    "linux",
                    &[
                        ("a", Outcome::Passed, None),
                        ("b", Outcome::Ignored, Some("no <TTL>")),
                    ],
                ),
                report(
                    "memory",
                    "windows",
                    &[
                        ("a", Outcome::Failed, Some("boom")),
                        ("b", Outcome::Ignored, Some("no <TTL>")),
                    ],
                ),
            ],
            ..Evidence::default()
        };
        let page = evidence.to_html();
        assert!(page.contains("memory (linux)") && page.contains("memory (windows)"));
        assert!(page.contains("docs/semantics.md#s9-ttl-wasi-kvttl010"));
        assert_eq!(page.matches("<td class=\"pass\">✓</td>").count(), 1);
        assert_eq!(page.matches("<td class=\"skip\"").count(), 2);
        assert!(page.contains("<li>no &lt;TTL&gt;</li>") && page.contains("<li>boom</li>"));
        assert_eq!(
            page.matches("<li>").count(),
            2,
            "one note per distinct reason"
        );
        assert!(page.contains("backend &lt;v1&gt;"));
        assert!(!page.contains("<script"));
    }
}
