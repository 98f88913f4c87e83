//! The reader, following Proxmox's `parse_vm_config` line by line, but keeping everything.

use super::schema::check_value;
use super::{Ignored, Line, Section, SectionKind, VmConfig};

/// The first problem a strict read finds, worded as Proxmox words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vm {vmid} - {message}")]
pub struct StrictError {
    pub vmid: u32,
    pub message: String,
}

/// Proxmox's warning for a section that repeats an earlier one.
pub(super) fn duplicate_message(kind: &SectionKind) -> String {
    match kind {
        SectionKind::Pending => "duplicate section: pending".into(),
        SectionKind::Special(name) => format!("duplicate special section: {name}"),
        SectionKind::Snapshot(name) => format!("duplicate snapshot section: {name}"),
        SectionKind::Main | SectionKind::Unknown(_) => String::new(),
    }
}

fn is_header_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Recognises a section header line.
fn header_kind(line: &str) -> Option<SectionKind> {
    let trimmed = line.trim_end();
    let inner = trimmed.strip_prefix('[')?.strip_suffix(']')?;
    if inner.contains(']') {
        return None;
    }
    if inner.eq_ignore_ascii_case("PENDING") {
        return Some(SectionKind::Pending);
    }
    if let Some(prefix) = inner.get(..8)
        && prefix.eq_ignore_ascii_case("special:")
    {
        let name = &inner[8..];
        if name.eq_ignore_ascii_case("cloudinit") || name.eq_ignore_ascii_case("fleecing") {
            return Some(SectionKind::Special(name.to_owned()));
        }
    }
    let mut chars = inner.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if starts_with_letter && inner.len() >= 2 && chars.all(is_header_name_char) {
        return Some(SectionKind::Snapshot(inner.to_owned()));
    }
    Some(SectionKind::Unknown(inner.to_owned()))
}

/// Splits `key: value` the way Proxmox's generic line pattern does:
/// `^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$`.
fn split_entry(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once(':')?;
    let mut chars = key.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return None;
    }
    let letters = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if !letters[1..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')
    {
        return None;
    }
    let value = rest.trim_matches(|c: char| c.is_ascii_whitespace());
    if !value.is_empty() {
        return Some((key, value));
    }
    // `\s*(.+?)\s*$` still matches an all-blank value: the lazy group takes its last
    // character (`boot: ` reads as a single space).
    let last = rest.char_indices().last()?.0;
    Some((key, &rest[last..]))
}

fn entry(key: &str, value: String, raw: &str, problem: Option<String>) -> Line {
    Line::Entry {
        key: key.to_owned(),
        value,
        raw: Some(raw.to_owned()),
        problem,
    }
}

/// Reads one non-blank, non-header line of `section`.
fn parse_line(kind: &SectionKind, raw: &str) -> Line {
    if let Some(comment) = raw.strip_prefix('#') {
        return Line::Comment(comment.to_owned());
    }
    let Some((key, value)) = split_entry(raw) else {
        return Line::Invalid {
            raw: raw.to_owned(),
            problem: format!("unable to parse config: {raw}"),
        };
    };
    match key {
        "description" | "args" => entry(key, value.to_owned(), raw, None),
        "delete" if *kind == SectionKind::Pending => entry(key, value.to_owned(), raw, None),
        "delete" => entry(
            key,
            value.to_owned(),
            raw,
            Some("property 'delete' is only allowed in [PENDING]".into()),
        ),
        _ if matches!(kind, SectionKind::Special(_)) => entry(key, value.to_owned(), raw, None),
        _ => {
            let key = if key == "cdrom" { "ide2" } else { key };
            match check_value(key, value) {
                Ok(normalised) => entry(key, normalised, raw, None),
                Err(reason) => entry(
                    key,
                    value.to_owned(),
                    raw,
                    Some(format!("unable to parse value of '{key}' - {reason}")),
                ),
            }
        }
    }
}

/// Starts a new section at a header line, marking an unknown one, or an earlier duplicate
/// as replaced.
fn open_section(sections: &mut Vec<Section>, kind: &SectionKind, raw: &str) {
    let mut section = Section::new(kind.clone());
    section.lines.push(Line::Header(raw.to_owned()));
    if let SectionKind::Unknown(name) = kind {
        section.ignored = Some(Ignored::Unknown(format!(
            "skipping unknown section: '{name}'"
        )));
    } else if let Some(earlier) = sections
        .iter_mut()
        .rev()
        .find(|s| s.kind == *kind && s.ignored.is_none())
    {
        earlier.ignored = Some(Ignored::Superseded);
        section.duplicate = true;
    }
    sections.push(section);
}

impl VmConfig {
    /// Reads a config file. It never fails: what Proxmox would refuse is kept and marked
    /// (see [`VmConfig::warnings`]).
    pub fn parse(text: &str) -> VmConfig {
        let mut sections = vec![Section::new(SectionKind::Main)];
        let body = text.strip_suffix('\n').unwrap_or(text);
        for raw in body.split('\n') {
            if raw.trim().is_empty() {
                sections
                    .last_mut()
                    .expect("main section")
                    .lines
                    .push(Line::Blank(raw.to_owned()));
                continue;
            }
            if raw.starts_with('[')
                && let Some(kind) = header_kind(raw)
            {
                open_section(&mut sections, &kind, raw);
                continue;
            }
            let section = sections.last_mut().expect("main section");
            let line = if section
                .ignored
                .as_ref()
                .is_some_and(|i| matches!(i, Ignored::Unknown(_)))
            {
                // Proxmox skips an unknown section's lines without looking at them.
                match parse_line(&SectionKind::Special(String::new()), raw) {
                    Line::Entry {
                        key, value, raw, ..
                    } => Line::Entry {
                        key,
                        value,
                        raw,
                        problem: None,
                    },
                    other => other,
                }
            } else {
                parse_line(&section.kind, raw)
            };
            section.lines.push(line);
        }
        VmConfig {
            sections,
            final_newline: text.ends_with('\n'),
        }
    }

    /// Reads a config file as Proxmox's strict reader does: the first problem is an error.
    pub fn parse_strict(text: &str, vmid: u32) -> Result<VmConfig, StrictError> {
        let config = Self::parse(text);
        match config.warnings().into_iter().next() {
            Some(warning) => Err(StrictError {
                vmid,
                message: warning.message,
            }),
            None => Ok(config),
        }
    }
}
