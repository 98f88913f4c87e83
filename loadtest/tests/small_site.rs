//! The harness end to end at a small scale: a real hub process, simulated agents enrolling
//! and reporting over mTLS QUIC, browser streams receiving the probed changes, the hub
//! restarted under the connected fleet.

use std::process::Command;

/// The number in `text` right before `marker` (`12 deliveries` → 12).
fn number_before(text: &str, marker: &str) -> u64 {
    let before = &text[..text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"))];
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|word| !word.is_empty())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("a number before {marker:?} in {text}"))
}

#[test]
fn a_small_site_runs_through_every_phase() {
    // The harness starts the hub binary beside itself.
    proxlab_testkit::workspace_bin("proxlab-hub");
    let output = Command::new(env!("CARGO_BIN_EXE_proxlab-loadtest"))
        .args([
            "--agents",
            "6",
            "--vms",
            "5",
            "--streams",
            "4",
            "--steady",
            "4s",
            "--warm-up",
            "1s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("6 enrolled in"), "{stdout}");
    assert_eq!(number_before(&stdout, " errors\n"), 0, "{stdout}");
    // Four probes a second for 4 s, each seen by the admin stream at least.
    assert!(number_before(&stdout, " deliveries)") >= 8, "{stdout}");
    assert!(
        number_before(&stdout, " requests, 0 errors") > 0,
        "{stdout}"
    );
    assert!(stdout.contains("hub restart: all back"), "{stdout}");
    // Every agent connected twice (before and after the restart).
    assert!(number_before(&stdout, " sessions,") >= 12, "{stdout}");
}
