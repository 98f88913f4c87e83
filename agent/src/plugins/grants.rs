//! What a node's operator grants plugins, in the `[plugins.grants]` section of
//! `agent.toml`, and what a grant covers.
//!
//! A grant names a plugin by id, but is bound to content: a grant that pins a component's
//! `sha256` covers that build only, wherever it came from; a grant without a pin covers only
//! the operator's own drop-in plugin of that id, never one the hub installed. So a hub admin
//! cannot ship new code under a granted id. `guest-exec` also needs the guest commands
//! listed: a program, then argument patterns (`*` is any one argument, `**` any rest).
//!
//! ```toml
//! [plugins.grants.set-guest-password]
//! capabilities = ["guest-exec"]
//! sha256 = "4f3c…"
//! guest_commands = ["chpasswd", "passwd --expire *"]
//! ```
//!
//! `http` needs the hosts listed (`host` for the scheme's default port, or `host:port`),
//! and `guest-files` the guest paths a plugin may write (an exact path, or `dir/**` for
//! anything under `dir`). `store` needs nothing more.
//!
//! ```toml
//! [plugins.grants.ipam-reserve]
//! capabilities = ["http", "store"]
//! sha256 = "9a1e…"
//! http_hosts = ["netbox.school.example"]
//! ```
//!
//! The short form `set-guest-password = ["guest-exec"]` is an unpinned grant without
//! commands, hosts or paths.

use serde::Deserialize;

use super::manifest::Capability;

/// One plugin's grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "GrantSpec")]
pub struct Grant {
    pub capabilities: Vec<Capability>,
    /// The build this grant is for (hex SHA-256 of the component).
    pub sha256: Option<String>,
    /// Guest commands `guest-exec` may run.
    pub guest_commands: Vec<String>,
    /// Hosts `http` may reach.
    pub http_hosts: Vec<String>,
    /// Guest paths `guest-files` may write.
    pub guest_paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum GrantSpec {
    Capabilities(Vec<Capability>),
    #[serde(rename_all = "snake_case")]
    Full {
        capabilities: Vec<Capability>,
        #[serde(default)]
        sha256: Option<String>,
        #[serde(default)]
        guest_commands: Vec<String>,
        #[serde(default)]
        http_hosts: Vec<String>,
        #[serde(default)]
        guest_paths: Vec<String>,
    },
}

impl From<GrantSpec> for Grant {
    fn from(spec: GrantSpec) -> Self {
        match spec {
            GrantSpec::Capabilities(capabilities) => Self {
                capabilities,
                ..Self::default()
            },
            GrantSpec::Full {
                capabilities,
                sha256,
                guest_commands,
                http_hosts,
                guest_paths,
            } => Self {
                capabilities,
                sha256,
                guest_commands,
                http_hosts,
                guest_paths,
            },
        }
    }
}

/// Why a grant does not cover a plugin build, for the operator.
pub fn coverage(grant: &Grant, sha256: &str, from_hub: bool) -> Result<(), String> {
    match &grant.sha256 {
        Some(pinned) if pinned.eq_ignore_ascii_case(sha256) => Ok(()),
        Some(pinned) => Err(format!(
            "its grant pins the build {pinned}, but this build is {sha256}; the node's \
             operator must review it and pin the new hash"
        )),
        None if !from_hub => Ok(()),
        None => Err(format!(
            "it was installed by the hub and its grant pins no build; the node's operator \
             must pin sha256 = \"{sha256}\" to grant it"
        )),
    }
}

/// Whether `command args` matches one of the patterns.
pub fn command_allowed(patterns: &[String], command: &str, args: &[String]) -> bool {
    patterns.iter().any(|pattern| {
        let mut words = pattern.split_whitespace();
        if words.next() != Some(command) {
            return false;
        }
        let wanted: Vec<&str> = words.collect();
        let mut given = args.iter();
        for (at, word) in wanted.iter().enumerate() {
            if *word == "**" {
                return at == wanted.len() - 1;
            }
            match given.next() {
                Some(arg) if *word == "*" || word == arg => {}
                _ => return false,
            }
        }
        given.next().is_none()
    })
}

/// Whether a plugin may write the guest file `path`: an absolute path without `.` or `..`
/// parts that one of the patterns names (`dir/**`: anything under `dir`).
pub fn path_allowed(patterns: &[String], path: &str) -> bool {
    let plain = path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .skip(1)
            .all(|part| !part.is_empty() && part != "." && part != "..");
    plain
        && patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix("/**") {
                Some(dir) => path
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/')),
                None => pattern == path,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn commands_match_program_and_argument_patterns() {
        let patterns = vec![
            "chpasswd".to_owned(),
            "passwd --expire *".to_owned(),
            "systemctl restart **".to_owned(),
        ];
        assert!(command_allowed(&patterns, "chpasswd", &[]));
        assert!(command_allowed(
            &patterns,
            "passwd",
            &args(&["--expire", "student"])
        ));
        assert!(command_allowed(
            &patterns,
            "systemctl",
            &args(&["restart", "a", "b"])
        ));
        assert!(command_allowed(&patterns, "systemctl", &args(&["restart"])));
        assert!(!command_allowed(&patterns, "chpasswd", &args(&["-e"])));
        assert!(!command_allowed(&patterns, "passwd", &args(&["--expire"])));
        assert!(!command_allowed(
            &patterns,
            "passwd",
            &args(&["--delete", "root"])
        ));
        assert!(!command_allowed(&patterns, "cat", &args(&["/etc/shadow"])));
        assert!(!command_allowed(&[], "chpasswd", &[]));
    }

    #[test]
    fn grants_cover_pinned_builds_and_unpinned_local_plugins_only() {
        let unpinned = Grant {
            capabilities: vec![Capability::GuestExec],
            ..Grant::default()
        };
        assert!(coverage(&unpinned, "aa", false).is_ok());
        assert!(
            coverage(&unpinned, "aa", true)
                .unwrap_err()
                .contains("pin sha256 = \"aa\"")
        );
        let pinned = Grant {
            sha256: Some("AA".into()),
            ..unpinned
        };
        assert!(coverage(&pinned, "aa", true).is_ok());
        assert!(
            coverage(&pinned, "bb", false)
                .unwrap_err()
                .contains("this build is bb")
        );
    }

    #[test]
    fn guest_paths_are_named_exactly_or_by_folder() {
        let patterns = vec!["/etc/motd".to_owned(), "/home/student/**".to_owned()];
        assert!(path_allowed(&patterns, "/etc/motd"));
        assert!(path_allowed(&patterns, "/home/student/notes/readme.txt"));
        assert!(!path_allowed(&patterns, "/home/student"));
        assert!(!path_allowed(&patterns, "/home/student/../../etc/shadow"));
        assert!(!path_allowed(&patterns, "/home/student/./x"));
        assert!(!path_allowed(&patterns, "/home/studentx/y"));
        assert!(!path_allowed(&patterns, "etc/motd"));
        assert!(!path_allowed(&patterns, "/etc/motd/"));
        assert!(!path_allowed(&[], "/etc/motd"));
    }

    #[test]
    fn both_forms_parse() {
        #[derive(Deserialize)]
        struct File {
            grants: std::collections::BTreeMap<String, Grant>,
        }
        let file: File = toml::from_str(
            "[grants]\nshort = [\"guest-exec\"]\n[grants.long]\ncapabilities = [\"guest-exec\"]\n\
             sha256 = \"ab\"\nguest_commands = [\"chpasswd\"]\n",
        )
        .unwrap();
        assert_eq!(file.grants["short"].capabilities, [Capability::GuestExec]);
        assert_eq!(file.grants["long"].sha256.as_deref(), Some("ab"));
        assert_eq!(file.grants["long"].guest_commands, ["chpasswd"]);
    }
}
