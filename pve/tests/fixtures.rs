//! Conformance with Proxmox's own test data in `../shared/pve-fixtures` (skipped, with a
//! notice, when that folder is absent).

use std::path::{Path, PathBuf};

use proxlab_pve::config::{VmConfig, WriteMode};

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pve-fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: {} not found; Proxmox fixture tests skipped",
            dir.display()
        );
        None
    }
}

fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(conf_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "conf") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn parse_config_fixtures_round_trip_to_their_expected_files() {
    let Some(root) = fixtures() else { return };
    let inputs = conf_files(&root.join("parse-config-input"));
    assert_eq!(inputs.len(), 10, "the corpus has 10 inputs");
    for input in inputs {
        let name = input.file_name().unwrap();
        let expected_path = root.join("parse-config-expected").join(name);
        let expected = if expected_path.exists() {
            read(&expected_path)
        } else {
            read(&input)
        };
        let config = VmConfig::parse(&read(&input));
        assert_eq!(
            config.write_canonical(WriteMode::Proxmox),
            expected,
            "{}",
            input.display()
        );
        // Strict mode fails exactly where Proxmox's does, and only there.
        let error_path = root
            .join("parse-config-expected")
            .join(format!("{}.strict.error", name.to_string_lossy()));
        let strict = VmConfig::parse_strict(&read(&input), 8006);
        match (error_path.exists(), strict) {
            (true, Err(err)) => assert_eq!(err.to_string(), read(&error_path).trim_end()),
            (true, Ok(_)) => panic!("{}: strict parse should fail", input.display()),
            (false, Err(err)) => panic!("{}: unexpected strict error {err}", input.display()),
            (false, Ok(_)) => {}
        }
        // Our own default keeps everything.
        assert_eq!(
            config.write_preserving(),
            read(&input),
            "{}",
            input.display()
        );
    }
}

#[test]
fn every_cfg2cmd_config_parses_and_rewrites_without_loss() {
    let Some(root) = fixtures() else { return };
    let files = conf_files(&root.join("cfg2cmd"));
    // 102 x86 configs, plus the aarch64 ones beside them.
    assert!(files.len() >= 102, "only {} configs found", files.len());
    for path in files {
        let text = read(&path);
        let config = VmConfig::parse(&text);
        let problems: Vec<_> = config.warnings().into_iter().map(|w| w.message).collect();
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        assert_eq!(config.write_preserving(), text, "{}", path.display());
        // The canonical form is stable and means the same as the original.
        let canonical = config.write_canonical(WriteMode::Lossless);
        let reread = VmConfig::parse(&canonical);
        assert_eq!(
            reread.write_canonical(WriteMode::Lossless),
            canonical,
            "{}",
            path.display()
        );
        let sorted = |config: &VmConfig| {
            let mut entries: Vec<(String, String)> = config
                .main()
                .entries()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            entries.sort();
            entries
        };
        assert_eq!(sorted(&reread), sorted(&config), "{}", path.display());
        assert_eq!(
            reread.main().description(),
            config.main().description(),
            "{}",
            path.display()
        );
        assert_eq!(reread.snapshot_names().len(), config.snapshot_names().len());
    }
}
