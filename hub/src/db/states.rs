//! The kinds and states the database stores as text, as enums: parsed once where rows are
//! read, written with [`as_str`](ClassVmState::as_str) where they are stored. The text is
//! also what the API and the pages show (serde writes the same words).

/// Defines a text-backed enum: `Variant = "text"` pairs, in order.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Whether a class is in use or being deleted.
    ClassState {
        Active = "active",
        Deleting = "deleting",
    }
);

text_enum!(
    /// What a VM is to its class.
    ClassVmKind {
        /// The read-only base the others are cloned from (one per node that needs it).
        Base = "base",
        Teacher = "teacher",
        Student = "student",
    }
);

text_enum!(
    /// Where a class VM is in its life.
    ClassVmState {
        /// Its VMID is reserved; the VM is to be made.
        Planned = "planned",
        Ready = "ready",
        /// Making it failed (it may be retried).
        Failed = "failed",
        /// It is being destroyed.
        Removing = "removing",
        /// Its student left; it is being reset before anyone else gets it.
        Recycling = "recycling",
    }
);

text_enum!(
    /// What a class job does.
    JobKind {
        Deploy = "deploy",
        Delete = "delete",
        /// Removes chosen VMs.
        Shrink = "shrink",
        /// Resets VMs students left.
        Recycle = "recycle",
        /// Makes a new version of the class from its teacher VM, then rolls it out.
        Publish = "publish",
        /// Moves the class's VMs to a version that exists (a rollback).
        Rollout = "rollout",
        /// Changes the hardware of the class's bases, teacher and student VMs.
        Hardware = "hardware",
    }
);

text_enum!(
    /// How an adopted VM (one that existed before its class) relates to the class's template.
    Adoption {
        /// The class's template itself, its base.
        Template = "template",
        /// Its disks are linked clones of the template: it can be reset.
        Linked = "linked",
        /// Anything else: started and stopped only.
        Plain = "plain",
    }
);

text_enum!(
    /// Where a template built from an ISO is in its life.
    BuildState {
        /// Its VMID is reserved; the node is making the VM.
        Creating = "creating",
        /// The VM exists; its builder installs the OS in its console.
        Installing = "installing",
        Template = "template",
        Failed = "failed",
    }
);

text_enum!(
    /// Where a class version is in its life.
    VersionState {
        /// Its bases are being made (a publish job runs).
        Building = "building",
        Ready = "ready",
        Failed = "failed",
        /// Its bases are gone; the row stays as history.
        Removed = "removed",
    }
);

text_enum!(
    /// How a class's VMs on older versions move to its current one.
    Rollout {
        /// Re-imaged at once (running VMs after a warning and a shutdown).
        Now = "now",
        /// Each when its student resets it; the VM's page says a newer version exists.
        NextReset = "next-reset",
        /// Only VMs given to a new student; the others stay where they are, even on reset.
        NewStudents = "new-students",
    }
);

text_enum!(
    /// Where a class job is.
    JobState {
        Pending = "pending",
        Running = "running",
        Done = "done",
        Failed = "failed",
    }
);

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// Reads a text column as one of these enums; an unknown word is a decoding error, never a
/// silent default.
pub(super) fn column<T>(
    row: &sqlx::any::AnyRow,
    name: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    use sqlx::Row;
    let text: String = row.try_get(name)?;
    parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: name.to_owned(),
        source: format!("unknown {name} {text:?}").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for state in ClassVmState::ALL {
            assert_eq!(ClassVmState::parse(state.as_str()), Some(*state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(ClassVmKind::parse("Base"), None);
        assert_eq!(
            JobState::parse("done").map(JobState::is_finished),
            Some(true)
        );
    }
}
