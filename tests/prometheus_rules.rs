//! The fleet rules in `deploy/prometheus/rules.yml`: promtool checks them and runs their unit
//! tests (`deploy/prometheus/tests/*.yml`), and every alert must be tested both firing and
//! silent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

fn rules_file() -> PathBuf {
    deploy_dir().join("rules.yml")
}

/// The promtool unit test files, sorted.
fn test_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yml in {}", dir.display());
    files
}

/// promtool from PATH. Missing, the tests fail: they must never pass without running it.
fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found on PATH: run `bash .ci/install` (it installs Debian's \
                 `prometheus` package, which has promtool)"
            )
        })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules() {
    let out = Command::new(promtool())
        .args(["check", "rules", "--lint-fatal"])
        .arg(rules_file())
        .output()
        .expect("promtool runs");
    assert_success("promtool check rules deploy/prometheus/rules.yml", &out);
}

/// `text` with each whole-number bucket bound written as Prometheus 3 stores it: `le="2"`
/// becomes `le="2.0"` (it writes `le` and `quantile` values as floats on ingestion).
fn as_prometheus_3_stores(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("le=\"") {
        let (before, after) = rest.split_at(at + "le=\"".len());
        out.push_str(before);
        let end = after.find('"').unwrap_or(after.len());
        let bound = &after[..end];
        out.push_str(bound);
        // The label `le`, not the end of another name (`handle="7"`).
        let name_starts = before[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if name_starts && !bound.is_empty() && bound.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(".0");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn bounds_are_rewritten_as_prometheus_3_stores_them() {
    assert_eq!(
        as_prometheus_3_stores(r#"{le="2"} {le="2.5"} {le="+Inf"} {le="10"} {handle="7"}"#),
        r#"{le="2.0"} {le="2.5"} {le="+Inf"} {le="10.0"} {handle="7"}"#
    );
}

/// Every unit test file, as written and again with its series' bucket bounds as Prometheus 3
/// stores them: a rule that matches a bound in one form alone (`le="2"`) finds nothing in the
/// other, and its alerts stay silent whatever the latency.
/// Also returns the temporary directory the rewritten files are in.
fn test_runs() -> (PathBuf, Vec<(String, PathBuf)>) {
    let dir = std::env::temp_dir().join(format!("prometheus-3-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let rules = rules_file();
    let mut runs = Vec::new();
    for file in test_files() {
        let name = file.file_name().expect("a file name").to_owned();
        let text = read(&file).replace("  - ../rules.yml", &format!("  - {}", rules.display()));
        let stored = dir.join(&name);
        std::fs::write(&stored, as_prometheus_3_stores(&text)).expect("a test file written");
        runs.push((file.display().to_string(), file));
        runs.push((
            format!(
                "{} with bounds as Prometheus 3 stores them",
                name.to_string_lossy()
            ),
            stored,
        ));
    }
    (dir, runs)
}

#[test]
fn promtool_unit_tests_pass() {
    let promtool = promtool();
    // One promtool per file, all at once: the SLO file alone evaluates days of rules.
    let (dir, runs) = test_runs();
    let runs: Vec<_> = runs
        .into_iter()
        .map(|(what, file)| {
            let child = Command::new(&promtool)
                .args(["test", "rules"])
                .arg(&file)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("promtool runs");
            (what, child)
        })
        .collect();
    let mut failures = String::new();
    for (what, child) in runs {
        let out = child.wait_with_output().expect("promtool runs");
        if !out.status.success() {
            failures += &format!(
                "promtool test rules {what} failed ({}):\n{}{}\n",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    assert!(failures.is_empty(), "{failures}");
}

/// The value after `key:` on a line of `text`, trimmed, for each such line.
fn values<'a>(text: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter_map(move |line| {
        let line = line.trim_start().trim_start_matches("- ");
        line.strip_prefix(key)?.strip_prefix(':').map(str::trim)
    })
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let rules = read(&rules_file());
    let alerts: Vec<&str> = values(&rules, "alert").collect();
    assert!(alerts.len() >= 10, "alerts found: {alerts:?}");

    // In each alert_rule_test entry, `alertname` comes before `exp_alerts`, which is `[]` when
    // the alert must not fire and a list of alerts when it must.
    let (mut firing, mut silent) = (Vec::new(), Vec::new());
    for file in test_files() {
        let text = read(&file);
        let mut pending: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("alertname:") {
                pending = Some(name.trim().to_owned());
            } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
                let name = pending.take().unwrap_or_else(|| {
                    panic!(
                        "{}: put `alertname` before `exp_alerts` in each test",
                        file.display()
                    )
                });
                if expected.trim() == "[]" {
                    silent.push(name);
                } else {
                    firing.push(name);
                }
            }
        }
    }
    let mut missing = Vec::new();
    for alert in &alerts {
        if !firing.iter().any(|n| n == alert) {
            missing.push(format!("{alert} never tested firing"));
        }
        if !silent.iter().any(|n| n == alert) {
            missing.push(format!("{alert} never tested silent"));
        }
    }
    for name in firing.iter().chain(&silent) {
        if !alerts.contains(&name.as_str()) {
            missing.push(format!("tests name {name}, which rules.yml does not have"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn names_are_prefixed_and_tests_evaluate_groups_in_file_order() {
    let rules = read(&rules_file());
    let groups: Vec<&str> = values(&rules, "name").collect();
    for group in &groups {
        assert!(group.starts_with("stream_monitor_"), "group {group}");
    }
    for alert in values(&rules, "alert") {
        assert!(alert.starts_with("StreamMonitor"), "alert {alert}");
    }
    // Recording groups must run before the alerts that read them: promtool's default group
    // order is random, so each test file states it, and it must name every group.
    for file in test_files() {
        let text = read(&file);
        let order: Vec<&str> = text
            .split("group_eval_order:")
            .nth(1)
            .unwrap_or_else(|| panic!("{}: no group_eval_order", file.display()))
            .lines()
            .skip(1)
            .map_while(|line| line.trim().strip_prefix("- "))
            .collect();
        assert_eq!(order, groups, "{}: group_eval_order", file.display());
    }
}
