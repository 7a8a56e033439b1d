//! What the diagnostic commands find and how they say it: `engine host
//! check`, `engine performance diagnose` and `engine memory analyze` each
//! produce [`Finding`]s, ranked by how strongly the evidence points at them,
//! printed as text for people or JSON for scripts.
//!
//! The analysis itself is pure (a snapshot in, findings out) so that tests
//! can plant a problem in a snapshot as well as in a running engine.

pub mod diagnose;
pub mod host;
pub mod memory;

use serde_json::{json, Value};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Nothing to do.
    Ok,
    /// Could not be read here (a container or VM hides it): not an error.
    Unknown,
    /// Worth knowing; no change needed for most deployments.
    Info,
    /// Costs latency or throughput; the remedy says what to change.
    Warn,
    /// Evidence of a fault the user will notice (refusals, stalls, growth).
    Problem,
}

impl Verdict {
    /// The word the text report and the JSON use.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unknown => "unknown",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Problem => "problem",
        }
    }
}

/// One thing a diagnostic command found.
#[derive(Clone, Debug)]
pub struct Finding {
    /// A stable identifier scripts can match (`cpu-governor`, `slow-agent`).
    pub check: &'static str,
    /// How much it matters.
    pub verdict: Verdict,
    /// What was seen, with the figures.
    pub summary: String,
    /// The measurements behind the verdict, one line each.
    pub evidence: Vec<String>,
    /// What to do about it (a command, a file, the performance tuning guide's remedy).
    pub remedy: Option<String>,
    /// The profile key to change, when there is one.
    pub key: Option<&'static str>,
    /// How strongly the evidence points here; findings are ranked by it
    /// within a verdict.
    pub weight: f64,
    /// The agent, shard or file the finding names, when there is one.
    pub subject: Option<String>,
}

impl Finding {
    /// A finding with no evidence, remedy or key yet.
    pub fn new(check: &'static str, verdict: Verdict, summary: impl Into<String>) -> Self {
        Self {
            check,
            verdict,
            summary: summary.into(),
            evidence: Vec::new(),
            remedy: None,
            key: None,
            weight: 0.0,
            subject: None,
        }
    }

    /// Add a line of evidence.
    pub fn evidence(mut self, line: impl Into<String>) -> Self {
        self.evidence.push(line.into());
        self
    }

    /// Say what fixes it.
    pub fn remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }

    /// Name the profile key to change.
    pub fn key(mut self, key: &'static str) -> Self {
        self.key = Some(key);
        self
    }

    /// Set the ranking weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Name what the finding is about.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "check": self.check,
            "verdict": self.verdict.label(),
            "summary": self.summary,
            "subject": self.subject,
            "evidence": self.evidence,
            "remedy": self.remedy,
            "profile_key": self.key,
            "weight": self.weight,
        })
    }
}

/// Order findings worst first: by verdict, then by weight.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.verdict
            .cmp(&a.verdict)
            .then(b.weight.total_cmp(&a.weight))
    });
}

/// The findings as the text report: one block each, worst first.
pub fn render_text(title: &str, findings: &[Finding]) -> String {
    use std::fmt::Write;
    let mut out = format!("{title}\n");
    if findings.is_empty() {
        out.push_str("  nothing found\n");
    }
    for finding in findings {
        let _ = writeln!(
            out,
            "[{:>7}] {}: {}",
            finding.verdict.label(),
            finding.check,
            finding.summary
        );
        for line in &finding.evidence {
            let _ = writeln!(out, "          {line}");
        }
        if let Some(remedy) = &finding.remedy {
            let _ = writeln!(out, "          fix: {remedy}");
        }
        if let Some(key) = finding.key {
            let _ = writeln!(out, "          profile key: {key}");
        }
    }
    out
}

/// The findings as JSON: `{ "report": title, "findings": [...] }` plus
/// whatever `extra` adds.
pub fn render_json(title: &str, findings: &[Finding], extra: Value) -> String {
    let mut body = json!({
        "report": title,
        "findings": findings.iter().map(Finding::to_json).collect::<Vec<_>>(),
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_verdict_first_then_heaviest_evidence() {
        let mut findings = vec![
            Finding::new("a", Verdict::Info, "a").weight(100.0),
            Finding::new("b", Verdict::Warn, "b").weight(1.0),
            Finding::new("c", Verdict::Warn, "c").weight(5.0),
            Finding::new("d", Verdict::Problem, "d"),
            Finding::new("e", Verdict::Ok, "e").weight(1e9),
        ];
        rank(&mut findings);
        let order: Vec<_> = findings.iter().map(|finding| finding.check).collect();
        assert_eq!(order, ["d", "c", "b", "a", "e"]);
        let json: Value =
            serde_json::from_str(&render_json("t", &findings, json!({"x": 1}))).expect("json");
        assert_eq!(json["findings"][0]["verdict"], "problem");
        assert_eq!(json["x"], 1);
        assert!(render_text("t", &findings).contains("[   warn] c: c"));
    }
}
