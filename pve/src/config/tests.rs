use super::*;

const SAMPLE: &str = "\
# Lab machine: week 1
#second line
boot: order=scsi0;net0
cores: 02
memory: 2048
name: lab-101
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
onboot: yes
scsi0: local:101/vm-101-disk-0.qcow2,size=8G
frobnicate: keep me
smbios1: uuid=5f0ed2a6-7c5e-4c6a-9f2e-0d2e2c1b7a11
this line is nonsense

[PENDING]
memory: 4096

[special:unknown]
name: other

[snap1]
cores: 2
snaptime: 1700000000
";

#[test]
fn preserving_writer_is_byte_exact() {
    let config = VmConfig::parse(SAMPLE);
    assert_eq!(config.write_preserving(), SAMPLE);
    let no_newline = SAMPLE.trim_end();
    assert_eq!(VmConfig::parse(no_newline).write_preserving(), no_newline);
}

#[test]
fn values_are_normalised_like_proxmox() {
    let config = VmConfig::parse(SAMPLE);
    let main = config.main();
    assert_eq!(main.get("cores"), Some("2"));
    assert_eq!(main.get("onboot"), Some("1"));
    assert_eq!(main.get("frobnicate"), None, "unknown keys are not read");
    assert_eq!(
        main.description().as_deref(),
        Some(" Lab machine: week 1\nsecond line")
    );
}

#[test]
fn warnings_name_what_proxmox_drops() {
    let warnings: Vec<String> = VmConfig::parse(SAMPLE)
        .warnings()
        .into_iter()
        .map(|w| w.message)
        .collect();
    assert_eq!(
        warnings,
        [
            "unable to parse value of 'frobnicate' - unknown setting 'frobnicate'",
            "unable to parse config: this line is nonsense",
            "skipping unknown section: 'special:unknown'",
        ]
    );
    let err = VmConfig::parse_strict(SAMPLE, 101).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vm 101 - unable to parse value of 'frobnicate' - unknown setting 'frobnicate'"
    );
}

#[test]
fn proxmox_mode_drops_and_lossless_mode_keeps() {
    let config = VmConfig::parse(SAMPLE);
    let proxmox = config.write_canonical(WriteMode::Proxmox);
    assert_eq!(
        proxmox,
        "\
# Lab machine%3A week 1
#second line
boot: order=scsi0;net0
cores: 2
memory: 2048
name: lab-101
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
onboot: 1
scsi0: local:101/vm-101-disk-0.qcow2,size=8G
smbios1: uuid=5f0ed2a6-7c5e-4c6a-9f2e-0d2e2c1b7a11

[PENDING]
memory: 4096

[snap1]
cores: 2
snaptime: 1700000000
"
    );
    let lossless = config.write_canonical(WriteMode::Lossless);
    assert!(lossless.contains("frobnicate: keep me\n"));
    assert!(lossless.contains("this line is nonsense\n"));
    assert!(lossless.contains("[special:unknown]\nname: other\n"));
    // And what lossless keeps reads back the same way.
    let again = VmConfig::parse(&lossless);
    assert_eq!(again.write_canonical(WriteMode::Lossless), lossless);
    assert_eq!(again.warnings(), config.warnings());
}

#[test]
fn edits_land_in_place_and_new_keys_at_the_end() {
    let mut config = VmConfig::parse(SAMPLE);
    config.main_mut().set("memory", "4096").unwrap();
    config.main_mut().set("tags", "lab;week1").unwrap();
    assert!(config.main_mut().remove("onboot"));
    let written = config.write_preserving();
    assert!(written.contains("cores: 02\nmemory: 4096\nname: lab-101\n"));
    assert!(written.contains("this line is nonsense\ntags: lab;week1\n\n[PENDING]"));
    assert!(!written.contains("onboot"));
    assert_eq!(
        config.main_mut().set("cores", "many"),
        Err("type check ('integer') failed - got 'many'".into())
    );
    assert_eq!(
        config.main_mut().set("name", "a\nb"),
        Err("property contains a line feed".into())
    );
}

#[test]
fn duplicates_resolve_to_the_later_one_with_a_warning() {
    let text = "name: a\nname: b\n\n[PENDING]\nbios: ovmf\n\n[PENDING]\nvga: qxl\n";
    let config = VmConfig::parse(text);
    assert_eq!(config.main().get("name"), Some("b"));
    let pending = config.section(&SectionKind::Pending).unwrap();
    assert_eq!(pending.get("vga"), Some("qxl"));
    assert_eq!(pending.get("bios"), None);
    assert_eq!(
        VmConfig::parse_strict(text, 7).unwrap_err().to_string(),
        "vm 7 - duplicate section: pending"
    );
    assert_eq!(
        config.write_canonical(WriteMode::Proxmox),
        "name: b\n\n[PENDING]\nvga: qxl\n"
    );
}

#[test]
fn delete_outside_pending_and_cdrom_alias() {
    let config = VmConfig::parse("cdrom: none,media=cdrom\ndelete: memory\n");
    assert_eq!(config.main().get("ide2"), Some("none,media=cdrom"));
    assert_eq!(
        config.warnings()[0].message,
        "property 'delete' is only allowed in [PENDING]"
    );
}

#[test]
fn unused_volumes_in_use_again_are_dropped_on_canonical_write() {
    let text = "scsi0: local:9/vm-9-disk-0.qcow2\nunused0: local:9/vm-9-disk-0.qcow2\nunused1: local:9/vm-9-disk-1.qcow2\n";
    let written = VmConfig::parse(text).write_canonical(WriteMode::Proxmox);
    assert_eq!(
        written,
        "scsi0: local:9/vm-9-disk-0.qcow2\nunused1: local:9/vm-9-disk-1.qcow2\n"
    );
}

#[test]
fn cloudinit_special_section_needs_a_cloudinit_drive() {
    let text = "scsi0: local:9/vm-9-disk-0.qcow2\n\n[special:cloudinit]\nname: x\n";
    let written = VmConfig::parse(text).write_canonical(WriteMode::Proxmox);
    assert_eq!(written, "scsi0: local:9/vm-9-disk-0.qcow2\n");
}

#[test]
fn put_section_and_descriptions() {
    let mut config = VmConfig::parse("cores: 1\n");
    config
        .put_section(
            &SectionKind::Snapshot("s1".into()),
            &[("cores".into(), "1".into())],
        )
        .unwrap();
    config.main_mut().set_description("hello: world\nline two");
    assert_eq!(
        config.write_preserving(),
        "#hello%3A world\n#line two\ncores: 1\n\n[s1]\ncores: 1\n"
    );
    assert_eq!(config.snapshot_names(), ["s1"]);
    let reread = VmConfig::parse(&config.write_preserving());
    assert_eq!(
        reread.main().description().as_deref(),
        Some("hello: world\nline two")
    );
}

#[test]
fn digest_is_sha1_of_the_raw_bytes() {
    assert_eq!(
        VmConfig::digest(b""),
        "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    );
}

#[test]
fn a_blank_value_reads_as_its_last_blank_character() {
    let config = VmConfig::parse("boot: \nname:\n");
    assert_eq!(config.main().get("boot"), Some(" "));
    assert_eq!(
        config.warnings()[0].message,
        "unable to parse config: name:"
    );
    assert_eq!(config.write_canonical(WriteMode::Proxmox), "boot:  \n");
}

#[test]
fn pending_keys_name_changes_and_deletions() {
    let config = VmConfig::parse(SAMPLE);
    assert_eq!(config.pending_keys(), vec!["memory".to_owned()]);
    let config = VmConfig::parse("cores: 1\n\n[PENDING]\ncores: 4\ndelete: !serial0,net1 cores\n");
    assert_eq!(config.pending_keys(), vec!["cores", "net1", "serial0"]);
    assert!(VmConfig::parse("cores: 1\n").pending_keys().is_empty());
}

#[test]
fn guest_agent_is_enabled_by_its_default_key_or_by_name() {
    let enabled =
        |line: &str| VmConfig::parse(&format!("{line}\nname: vm\n")).guest_agent_enabled();
    assert!(enabled("agent: 1"));
    assert!(enabled("agent: 1,fstrim_cloned_disks=1"));
    assert!(enabled("agent: enabled=1"));
    assert!(enabled("agent: type=virtio,enabled=1"));
    assert!(!enabled("agent: 0"));
    assert!(!enabled("agent: enabled=0,type=isa"));
    assert!(!enabled("agent: type=virtio"), "enabled defaults to off");
    assert!(!enabled("cores: 2"));
}
