//! Names each VM `<class>-<username>`: `networking-alice`. The teacher's VM is
//! `<class>-teacher`; a VM not yet given to a student keeps a numbered name.

use proxlab_plugin_sdk::v0_1::name::{ClassInfo, Guest, Naming, VmInfo};

struct NameByStudent;

/// Keeps what a hostname may hold: lowercase letters, digits and dashes.
fn hostname_safe(text: &str) -> String {
    let mapped: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    mapped.trim_matches('-').to_owned()
}

impl Guest for NameByStudent {
    fn name(class: ClassInfo, vm: VmInfo) -> Result<Naming, String> {
        let who = match (&vm.student, vm.kind.as_str()) {
            (Some(student), _) => hostname_safe(student),
            (None, "teacher") => "teacher".to_owned(),
            (None, _) => format!("seat{:02}", vm.index),
        };
        if who.is_empty() {
            return Err(format!("no usable name in {:?}", vm.student));
        }
        let mut name = format!("{}-{who}", class.slug);
        name.truncate(63);
        let name = name.trim_end_matches('-').to_owned();
        Ok(Naming {
            hostname: name.clone(),
            name,
        })
    }
}

proxlab_plugin_sdk::v0_1::name::export!(NameByStudent);
