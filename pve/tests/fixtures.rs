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

/// Rewrites a backup's config for restore onto `target`, the way the fixtures expect:
/// drives listed in `#qmdump#map` lines get fresh volumes in map order (their format from
/// the map, `raw` where it names none), drives not in the backup are commented out, and
/// snapshot, lock, unused and map lines go.
fn restore_rewrite(text: &str, vmid: u32, target: &str) -> String {
    use proxlab_pve::config::Line;
    use proxlab_pve::drive::{Drive, DriveKey};
    use proxlab_pve::volid::disk_name;

    let mut config = VmConfig::parse(text);
    let map: Vec<(String, String)> = config
        .main()
        .lines
        .iter()
        .filter_map(|line| match line {
            Line::Comment(comment) => comment.strip_prefix("qmdump#map:").map(|rest| {
                let fields: Vec<&str> = rest.split(':').collect();
                let format = if fields[3].is_empty() {
                    "raw"
                } else {
                    fields[3]
                };
                (fields[0].to_owned(), format.to_owned())
            }),
            _ => None,
        })
        .collect();
    let main = config.main_mut();
    main.retain_keys(|key| !matches!(key, "parent" | "lock") && !key.starts_with("unused"));
    main.lines
        .retain(|line| !matches!(line, Line::Comment(c) if c.starts_with("qmdump#")));
    for line in &mut main.lines {
        let Line::Entry {
            key, value, raw, ..
        } = line
        else {
            continue;
        };
        let Some(drive_key) = DriveKey::parse(key) else {
            continue;
        };
        let mut drive = Drive::parse(drive_key, value).unwrap();
        if !drive.is_disk_image() {
            continue;
        }
        match map.iter().position(|(mapped, _)| mapped == key) {
            Some(n) => {
                let name = disk_name(vmid, n as u32, Some(&map[n].1));
                drive
                    .set_volume(&format!("{target}:{vmid}/{name}"))
                    .unwrap();
                *value = drive.value();
                *raw = None;
            }
            None => *line = Line::Comment(raw.clone().unwrap()),
        }
    }
    config.write_preserving()
}

#[test]
fn restore_configs_pass_through_a_storage_rewrite() {
    let Some(root) = fixtures() else { return };
    let inputs = conf_files(&root.join("restore-config-input"));
    assert_eq!(inputs.len(), 4);
    for input in inputs {
        let name = input.file_name().unwrap();
        let vmid: u32 = name
            .to_string_lossy()
            .trim_end_matches(".conf")
            .parse()
            .unwrap();
        let expected = read(&root.join("restore-config-expected").join(name));
        assert_eq!(
            restore_rewrite(&read(&input), vmid, "target"),
            expected,
            "{}",
            input.display()
        );
    }
}
