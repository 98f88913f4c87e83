//! The agent's command line, as an operator meets it.

use std::process::Command;

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_proxlab-agent"));
    command
        .env_remove("PROXLAB_STATE_DIR")
        .env_remove("PROXLAB_AGENT_CONFIG");
    command
}

/// A plugin `plugins/build` made, or `None` (with a notice) when they are not built.
fn built_plugin(name: &str) -> Option<std::path::PathBuf> {
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(name);
    if plugin.join("plugin.wasm").exists() {
        Some(plugin)
    } else {
        eprintln!("NOTICE: the plugins are not built (run plugins/build); skipping.");
        None
    }
}

/// The agent with an empty `agent.toml` in `dir`: a node that grants nothing.
fn agent_configured_in(dir: &std::path::Path) -> Command {
    let config = dir.join("agent.toml");
    std::fs::write(&config, "").unwrap();
    let mut command = agent();
    command.arg("--config").arg(config);
    command
}

#[test]
fn run_before_enrolling_explains_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.toml"), "").unwrap();
    let output = agent()
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not enrolled") && stderr.contains("proxlab-agent enroll"),
        "{stderr}"
    );
}

#[test]
fn malformed_pin_is_refused_before_any_network_use() {
    let output = agent()
        .args([
            "enroll",
            "--hub",
            "127.0.0.1:9",
            "--token",
            "t",
            "--ca-pin",
            "md5:1234",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sha256:<64 hex digits>"));
}

#[test]
fn invalid_node_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pin = format!("sha256:{}", "00".repeat(32));
    let output = agent()
        .arg("--state-dir")
        .arg(dir.path())
        .args([
            "enroll",
            "--hub",
            "127.0.0.1:9",
            "--token",
            "t",
            "--ca-pin",
            &pin,
        ])
        .args(["--node-name", "../etc"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid node name"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn config_with_an_unknown_key_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "stat_dir = \"/tmp\"\n").unwrap();
    let output = agent()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("stat_dir"));
}

#[test]
fn default_config_is_the_shipped_example() {
    let output = agent().arg("default-config").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        include_str!("../agent.example.toml")
    );
}

#[test]
fn plugin_check_names_the_capabilities_this_node_withholds() {
    let Some(plugin) = built_plugin("set-guest-password") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = agent_configured_in(dir.path())
        .args(["plugin", "check"])
        .arg(&plugin)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("capabilities: guest-exec")
            && stdout.contains("withheld on this node: guest-exec: there is no grant"),
        "{stdout}"
    );
}

#[test]
fn plugin_run_fails_when_a_validate_finding_is_an_error() {
    let Some(plugin) = built_plugin("hostile") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let validate = |class: &str| {
        let input = dir.path().join(format!("{class}.json"));
        let json = format!(
            r#"{{"class": {{"id": 7, "name": "{class}", "slug": "{class}"}},
                "vm": {{"vmid": 10001, "kind": "student", "index": 1, "name": "x"}}}}"#
        );
        std::fs::write(&input, json).unwrap();
        agent_configured_in(dir.path())
            .args(["plugin", "run"])
            .arg(&plugin)
            .args(["--hook", "validate", "--input"])
            .arg(&input)
            .output()
            .unwrap()
    };
    let invalid = validate("invalid");
    assert_eq!(invalid.status.code(), Some(1), "{invalid:?}");
    let printed = String::from_utf8_lossy(&invalid.stdout);
    assert!(
        printed.contains("no VLAN is left for this class"),
        "{printed}"
    );
    let said = String::from_utf8_lossy(&invalid.stderr);
    assert!(said.contains("a finding is an error"), "{said}");
    let doubtful = validate("doubtful");
    assert!(doubtful.status.success(), "{doubtful:?}");
}

#[test]
fn plugin_test_runs_every_case_and_fails_when_one_does() {
    let Some(plugin) = built_plugin("hostile") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir(&cases).unwrap();
    let case = |file: &str, class: &str, expectation: &str| {
        let json = format!(
            r#"{{"hook": "name",
                "input": {{"class": {{"id": 7, "name": "{class}", "slug": "{class}"}},
                           "vm": {{"vmid": 10001, "kind": "student", "index": 3, "name": "x"}}}},
                {expectation}}}"#
        );
        std::fs::write(cases.join(file), json).unwrap();
    };
    case("a-named.json", "lab", r#""expect": {"name": "lab-3"}"#);
    case("b-wrong.json", "lab", r#""expect": {"name": "other"}"#);
    case(
        "c-trap.json",
        "trap",
        r#""expect_error": "the plugin gave up""#,
    );
    std::fs::write(cases.join("notes.txt"), "not a case").unwrap();
    let run = || {
        agent_configured_in(dir.path())
            .args(["plugin", "test"])
            .arg(&plugin)
            .arg(&cases)
            .output()
            .unwrap()
    };
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("ok    ") && lines[0].ends_with("a-named.json"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("FAIL  ")
            && lines[1].contains("b-wrong.json: expected {\"name\":\"other\"}"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("ok    ") && lines[2].ends_with("c-trap.json"),
        "{stdout}"
    );
    assert_eq!(lines[3], "2 passed, 1 failed");
    // Without the failing case, the run passes.
    std::fs::remove_file(cases.join("b-wrong.json")).unwrap();
    let output = run();
    assert!(output.status.success(), "{output:?}");
}
