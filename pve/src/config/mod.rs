//! VM configuration files (`/etc/pve/qemu-server/<vmid>.conf`).
//!
//! The document keeps every line of the file, in order, so nothing is ever lost: unknown
//! keys, unknown sections and values Proxmox would refuse are kept verbatim, each marked with
//! the problem Proxmox would report. Two writers sit on top:
//!
//! * [`VmConfig::write_preserving`] reproduces the file byte for byte, with edited entries
//!   changed in place and new ones appended to their section;
//! * [`VmConfig::write_canonical`] writes what Proxmox's own writer would: sorted keys,
//!   sections in Proxmox's order, descriptions as `#` lines. With [`WriteMode::Proxmox`] it
//!   also drops what Proxmox drops; with [`WriteMode::Lossless`] it keeps it.
//!
//! [`VmConfig::parse_strict`] fails with the exact message Proxmox's strict reader gives.

mod parse;
pub mod schema;
pub mod text;
mod write;

pub use parse::StrictError;
pub use write::WriteMode;

/// Which section a group of lines belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// The VM's current configuration, before any header.
    Main,
    /// `[PENDING]`: changes waiting for the next start.
    Pending,
    /// `[special:cloudinit]` or `[special:fleecing]`.
    Special(String),
    /// `[name]`: a snapshot.
    Snapshot(String),
    /// A header Proxmox does not know (it skips the whole section).
    Unknown(String),
}

impl SectionKind {
    /// The header line, without brackets, as Proxmox writes it.
    pub fn header(&self) -> Option<String> {
        match self {
            SectionKind::Main => None,
            SectionKind::Pending => Some("PENDING".into()),
            SectionKind::Special(name) => Some(format!("special:{name}")),
            SectionKind::Snapshot(name) | SectionKind::Unknown(name) => Some(name.clone()),
        }
    }
}

/// One line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A blank line (Proxmox ignores them).
    Blank(String),
    /// A header line; the section it opens follows in [`Section::kind`].
    Header(String),
    /// A `#` line: part of the section's description. Holds the text after `#`, undecoded.
    Comment(String),
    /// `key: value`. `raw` is the original line while the entry is unmodified. `problem` is
    /// why Proxmox would drop the entry, if it would.
    Entry {
        key: String,
        value: String,
        raw: Option<String>,
        problem: Option<String>,
    },
    /// A line Proxmox cannot parse at all, kept verbatim.
    Invalid { raw: String, problem: String },
}

/// A section and its lines (the header line included, for sections after the main one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub lines: Vec<Line>,
    /// Whether, and why, Proxmox ignores the whole section.
    pub ignored: Option<Ignored>,
    /// Whether an earlier section of the same kind exists (Proxmox warns, then lets this one
    /// replace it).
    pub duplicate: bool,
}

/// Why Proxmox ignores a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// The header is unknown; Proxmox warns with this message and skips the section.
    Unknown(String),
    /// A later section of the same kind replaces this one.
    Superseded,
}

/// A problem Proxmox's non-strict reader would warn about, and then drop the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The message without the `vm <vmid> - ` prefix.
    pub message: String,
}

/// A parsed VM configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub sections: Vec<Section>,
    /// Whether the file ended with a newline (kept by the preserving writer).
    pub final_newline: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            sections: vec![Section::new(SectionKind::Main)],
            final_newline: true,
        }
    }
}

impl Section {
    fn new(kind: SectionKind) -> Self {
        Self {
            kind,
            lines: Vec::new(),
            ignored: None,
            duplicate: false,
        }
    }

    /// The entries Proxmox would read, in file order: valid ones, with their normalised
    /// values. A later duplicate of a key wins, as in Proxmox.
    pub fn entries(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for line in &self.lines {
            if let Line::Entry {
                key,
                value,
                problem: None,
                ..
            } = line
            {
                if key == "description" {
                    continue;
                }
                out.retain(|(existing, _)| existing != key);
                out.push((key, value));
            }
        }
        out
    }

    /// The value of `key` as Proxmox reads it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries()
            .into_iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }

    /// Sets `key`, replacing its last entry in place (and dropping earlier duplicates), or
    /// appending a new entry. The value is checked like Proxmox's reader checks it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if key == "description" {
            self.set_description(value);
            return Ok(());
        }
        let value = self.checked(key, value)?;
        let last = self.lines.iter().rposition(|line| is_entry_for(line, key));
        let new_entry = Line::Entry {
            key: key.to_owned(),
            value,
            raw: None,
            problem: None,
        };
        match last {
            Some(index) => {
                self.lines[index] = new_entry;
                let mut position = 0;
                self.lines.retain(|line| {
                    let keep = position >= index || !is_entry_for(line, key);
                    position += 1;
                    keep
                });
            }
            None => {
                // Before the blank lines that separate this section from the next.
                let end = self
                    .lines
                    .iter()
                    .rposition(|line| !matches!(line, Line::Blank(_)))
                    .map_or(0, |last| last + 1);
                self.lines.insert(end, new_entry);
            }
        }
        Ok(())
    }

    fn checked(&self, key: &str, value: &str) -> Result<String, String> {
        if matches!(self.kind, SectionKind::Special(_)) {
            if value.contains(['\n', '\r']) {
                return Err("property contains a line feed".into());
            }
            return Ok(value.to_owned());
        }
        if key == "delete" && self.kind == SectionKind::Pending {
            return Ok(value.to_owned());
        }
        schema::check_value(key, value)
    }

    /// Removes every entry for `key`. Returns whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|line| !is_entry_for(line, key));
        before != self.lines.len()
    }

    /// Keeps only the entries for which `keep(key)` holds.
    pub fn retain_keys(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.lines.retain(|line| match line {
            Line::Entry { key, .. } => keep(key),
            _ => true,
        });
    }

    /// The description, as Proxmox assembles it from `#` lines and `description:` entries.
    pub fn description(&self) -> Option<String> {
        let mut text = String::new();
        let mut any = false;
        for line in &self.lines {
            match line {
                Line::Comment(comment) => {
                    any = true;
                    text.push_str(&text::decode_text(comment));
                    text.push('\n');
                }
                Line::Entry {
                    key,
                    value,
                    problem: None,
                    ..
                } if key == "description" => {
                    any = true;
                    text.push_str(&text::decode_text(value));
                }
                _ => {}
            }
        }
        any.then(|| text.trim_end().to_owned())
    }

    /// Replaces the description with `text`, written as `#` lines at the top.
    pub fn set_description(&mut self, text: &str) {
        self.lines
            .retain(|line| !matches!(line, Line::Comment(_)) && !is_entry_for(line, "description"));
        let start = usize::from(matches!(self.lines.first(), Some(Line::Header(_))));
        let comments = text
            .lines()
            .map(|line| Line::Comment(text::encode_text(line)));
        self.lines.splice(start..start, comments);
    }
}

fn is_entry_for(line: &Line, wanted: &str) -> bool {
    matches!(line, Line::Entry { key, .. } if key == wanted)
}

impl VmConfig {
    /// The main section (created empty if the file had none).
    pub fn main(&self) -> &Section {
        self.sections
            .iter()
            .find(|section| section.kind == SectionKind::Main)
            .expect("a parsed config always has a main section")
    }

    pub fn main_mut(&mut self) -> &mut Section {
        if !self.sections.iter().any(|s| s.kind == SectionKind::Main) {
            self.sections.insert(0, Section::new(SectionKind::Main));
        }
        self.sections
            .iter_mut()
            .find(|section| section.kind == SectionKind::Main)
            .expect("inserted above")
    }

    /// The section of a kind that Proxmox would read (the last of duplicates).
    pub fn section(&self, kind: &SectionKind) -> Option<&Section> {
        self.sections
            .iter()
            .rev()
            .find(|section| &section.kind == kind && section.ignored.is_none())
    }

    /// Whether the config enables the QEMU guest agent (`agent: 1`, `agent: enabled=1,…`), so
    /// the VM gets a guest-agent channel when it starts.
    pub fn guest_agent_enabled(&self) -> bool {
        let Some(value) = self.main().get("agent") else {
            return false;
        };
        let Ok(agent) = crate::propstring::PropertyString::parse(value) else {
            return false;
        };
        agent
            .default_value()
            .or_else(|| agent.get("enabled"))
            .is_some_and(|enabled| matches!(enabled, "1" | "on" | "yes" | "true"))
    }

    /// The keys a `[PENDING]` section changes or deletes (`delete: a,!b`), sorted, without
    /// repeats: what waits for the VM's next start.
    pub fn pending_keys(&self) -> Vec<String> {
        let Some(pending) = self.section(&SectionKind::Pending) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = Vec::new();
        for (key, value) in pending.entries() {
            if key == "delete" {
                keys.extend(
                    value
                        .split([',', ';', ' '])
                        .map(|key| key.trim_start_matches('!'))
                        .filter(|key| !key.is_empty())
                        .map(str::to_owned),
                );
            } else {
                keys.push(key.to_owned());
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Snapshot names, in file order.
    pub fn snapshot_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for section in &self.sections {
            if let SectionKind::Snapshot(name) = &section.kind
                && section.ignored.is_none()
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// Removes every section of a kind. Returns whether there was one.
    pub fn remove_sections(&mut self, wanted: impl Fn(&SectionKind) -> bool) -> bool {
        let before = self.sections.len();
        self.sections
            .retain(|section| section.kind == SectionKind::Main || !wanted(&section.kind));
        before != self.sections.len()
    }

    /// Adds a section at the end (a snapshot, `[PENDING]` ...), replacing one of that kind.
    pub fn put_section(
        &mut self,
        kind: &SectionKind,
        entries: &[(String, String)],
    ) -> Result<(), String> {
        self.remove_sections(|existing| existing == kind);
        let mut section = Section::new(kind.clone());
        if let Some(header) = kind.header() {
            section.lines.push(Line::Blank(String::new()));
            section.lines.push(Line::Header(format!("[{header}]")));
        }
        for (key, value) in entries {
            section.set(key, value)?;
        }
        self.sections.push(section);
        Ok(())
    }

    /// Every warning Proxmox's non-strict reader would print, in file order.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut warnings = Vec::new();
        for section in &self.sections {
            match &section.ignored {
                Some(Ignored::Unknown(message)) => {
                    warnings.push(Warning {
                        message: message.clone(),
                    });
                    continue;
                }
                Some(Ignored::Superseded) | None => {}
            }
            if section.duplicate {
                warnings.push(Warning {
                    message: parse::duplicate_message(&section.kind),
                });
            }
            for line in &section.lines {
                match line {
                    Line::Entry {
                        problem: Some(problem),
                        ..
                    }
                    | Line::Invalid { problem, .. } => warnings.push(Warning {
                        message: problem.clone(),
                    }),
                    _ => {}
                }
            }
        }
        warnings
    }

    /// The SHA-1 of a file's raw bytes: what `--digest` and the API compare against.
    pub fn digest(raw: &[u8]) -> String {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(raw))
    }
}

#[cfg(test)]
mod tests;
