//! The writers: canonical (Proxmox's `write_vm_config`) and preserving (the file as it was,
//! with edits in place).

use super::text::encode_text;
use super::{Ignored, Line, Section, SectionKind, VmConfig};

/// What the canonical writer does with what Proxmox would drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Write exactly what Proxmox writes after a non-strict read: invalid entries, unknown
    /// sections and unparseable lines are gone.
    Proxmox,
    /// Write Proxmox's layout, but keep invalid entries, unparseable lines and unknown
    /// sections verbatim, so nothing is lost.
    Lossless,
}

/// Whether a drive value names a cloud-init volume (`vm-<vmid>-cloudinit`).
fn is_cloudinit_drive(key: &str, value: &str) -> bool {
    let (base, index) = super::schema::split_index(key);
    index.is_some()
        && matches!(base, "ide" | "sata" | "scsi" | "virtio")
        && value
            .split(',')
            .next()
            .is_some_and(|volume| volume.contains("-cloudinit"))
}

fn drive_volume(value: &str) -> &str {
    let first = value.split(',').next().unwrap_or_default();
    first.strip_prefix("file=").unwrap_or(first)
}

/// One section's body in canonical form.
fn canonical_body(section: &Section, mode: WriteMode, used_volumes: &[&str]) -> String {
    let mut out = String::new();
    match section.description() {
        Some(text) if !text.is_empty() => {
            for line in text.split('\n') {
                out.push('#');
                out.push_str(&encode_text(line));
                out.push('\n');
            }
        }
        Some(_) if section.kind == SectionKind::Pending => out.push_str("#\n"),
        _ => {}
    }
    let mut entries: Vec<(&str, &str)> = section.entries();
    if mode == WriteMode::Lossless {
        for line in &section.lines {
            if let Line::Entry {
                key,
                value,
                problem: Some(_),
                ..
            } = line
                && !entries.iter().any(|(existing, _)| existing == key)
            {
                entries.push((key, value));
            }
        }
    }
    if section.kind == SectionKind::Main {
        // Proxmox drops `unusedN` entries whose volume a drive uses again.
        entries.retain(|(key, value)| {
            !(key.starts_with("unused") && used_volumes.contains(&drive_volume(value)))
        });
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (key, value) in entries {
        out.push_str(key);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    }
    if mode == WriteMode::Lossless {
        for line in &section.lines {
            if let Line::Invalid { raw, .. } = line {
                out.push_str(raw);
                out.push('\n');
            }
        }
    }
    out
}

impl VmConfig {
    /// Writes the config as Proxmox's writer lays it out.
    pub fn write_canonical(&self, mode: WriteMode) -> String {
        let main = self.main();
        let main_entries = main.entries();
        let used_volumes: Vec<&str> = main_entries
            .iter()
            .filter(|(key, _)| !key.starts_with("unused"))
            .filter(|(key, _)| {
                let (base, index) = super::schema::split_index(key);
                index.is_some() && matches!(base, "ide" | "sata" | "scsi" | "virtio")
                    || matches!(*key, "efidisk0" | "tpmstate0")
            })
            .map(|(_, value)| drive_volume(value))
            .collect();
        let has_cloudinit = main_entries.iter().any(|(k, v)| is_cloudinit_drive(k, v));

        let mut out = canonical_body(main, mode, &used_volumes);
        let live = |wanted: fn(&SectionKind) -> bool| {
            let mut found: Vec<&Section> = self
                .sections
                .iter()
                .filter(|s| s.ignored.is_none() && wanted(&s.kind))
                .collect();
            found.sort_by(|a, b| {
                let name = |s: &Section| s.kind.header().unwrap_or_default();
                name(a).as_bytes().cmp(name(b).as_bytes())
            });
            found
        };
        let mut push_section = |section: &Section, body: String| {
            out.push_str(&format!(
                "\n[{}]\n",
                section.kind.header().unwrap_or_default()
            ));
            out.push_str(&body);
        };
        for section in live(|k| *k == SectionKind::Pending) {
            let body = canonical_body(section, mode, &[]);
            if !body.is_empty() {
                push_section(section, body);
            }
        }
        for section in live(|k| matches!(k, SectionKind::Special(_))) {
            let is_cloudinit = matches!(&section.kind, SectionKind::Special(n) if n == "cloudinit");
            if is_cloudinit && !has_cloudinit {
                continue;
            }
            push_section(section, canonical_body(section, mode, &[]));
        }
        for section in live(|k| matches!(k, SectionKind::Snapshot(_))) {
            push_section(section, canonical_body(section, mode, &[]));
        }
        if mode == WriteMode::Lossless {
            for section in &self.sections {
                if matches!(section.ignored, Some(Ignored::Unknown(_))) {
                    out.push('\n');
                    for line in &section.lines {
                        if !matches!(line, Line::Blank(_)) {
                            out.push_str(&preserved_line(line));
                            out.push('\n');
                        }
                    }
                }
            }
        }
        out
    }

    /// Writes the file as it was read, with edited entries changed in place.
    pub fn write_preserving(&self) -> String {
        let lines: Vec<String> = self
            .sections
            .iter()
            .flat_map(|section| section.lines.iter().map(preserved_line))
            .collect();
        let mut out = lines.join("\n");
        if self.final_newline && !lines.is_empty() {
            out.push('\n');
        }
        out
    }
}

fn preserved_line(line: &Line) -> String {
    match line {
        Line::Blank(raw) | Line::Header(raw) | Line::Invalid { raw, .. } => raw.clone(),
        Line::Comment(text) => format!("#{text}"),
        Line::Entry { raw: Some(raw), .. } => raw.clone(),
        Line::Entry { key, value, .. } => format!("{key}: {value}"),
    }
}
