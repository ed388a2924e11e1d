//! The fixtures' usage figures as the official SDKs read them: tests/sdk/check_fixtures.py parses
//! every `tests/fixtures/*.sse` with the OpenAI, Anthropic, Google GenAI and Cohere Python SDKs'
//! own types and checks the `.expected.json` token figures against what those objects report.
//! Needs python3 with the `openai`, `anthropic`, `google-genai` and `cohere` packages
//! (`.ci/install` installs them).

use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn official_sdks_read_the_fixture_usage_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/sdk/check_fixtures.py");
    let dir = root.join("tests/fixtures");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .output(),
    )
    .await
    .expect("the fixture check finishes within 2 minutes")
    .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3 and `pip install openai anthropic google-genai cohere` (see .ci/install)"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the openai, anthropic, google-genai and cohere Python packages are missing: `pip install openai anthropic google-genai cohere` (see .ci/install)\n{stderr}"
    );
    assert!(
        output.status.success(),
        "SDK fixture check failed:\n{stderr}"
    );

    let mut fixtures: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sse"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    fixtures.sort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut checked: Vec<String> = stdout
        .lines()
        .map(|line| {
            let parsed: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("one JSON line per fixture ({e}): {line}"));
            parsed["fixture"]
                .as_str()
                .unwrap_or_else(|| panic!("a fixture name in {line}"))
                .to_owned()
        })
        .collect();
    checked.sort();
    assert!(!fixtures.is_empty(), "fixtures in {}", dir.display());
    assert_eq!(
        checked, fixtures,
        "the SDK check read every .sse fixture once\n{stdout}"
    );
}
