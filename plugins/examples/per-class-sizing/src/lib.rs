//! Sizes a class's student VMs from settings the teacher sets on the class page: `cores` and
//! `memory_mib` (0 keeps the template's). The admin's site-wide `max_memory_mib` caps what a
//! class may ask for: above it, `validate` fails the VM with a message saying so.

use proxlab_plugin_sdk::{ConfigEdit, Facts, Finding, Severity, configure, validate};

struct PerClassSizing;

/// The settings' sizes: `(key, value)` for each one set above 0.
fn sizes(facts: &Facts) -> Vec<(&'static str, i64)> {
    [("cores", "cores"), ("memory", "memory_mib")]
        .into_iter()
        .filter_map(|(key, setting)| Some((key, facts.integer(setting).filter(|n| *n > 0)?)))
        .collect()
}

impl configure::Guest for PerClassSizing {
    fn configure(facts: Facts) -> Result<Vec<ConfigEdit>, String> {
        if facts.vm.kind != "student" {
            return Ok(Vec::new());
        }
        Ok(sizes(&facts)
            .into_iter()
            .map(|(key, value)| ConfigEdit::Set((key.to_owned(), value.to_string())))
            .collect())
    }
}

impl validate::Guest for PerClassSizing {
    fn validate(facts: Facts) -> Vec<Finding> {
        let cap = facts.integer("max_memory_mib").unwrap_or(i64::MAX);
        let mut findings = Vec::new();
        for (key, value) in sizes(&facts) {
            if key == "memory" && value > cap {
                findings.push(Finding {
                    severity: Severity::Error,
                    message: format!(
                        "the class asks for {value} MiB of memory per VM; this site allows at \
                         most {cap} MiB"
                    ),
                });
            }
        }
        if facts.integer("cores").unwrap_or(0) < 0 || facts.integer("memory_mib").unwrap_or(0) < 0 {
            findings.push(Finding {
                severity: Severity::Warning,
                message: "a negative size is ignored".into(),
            });
        }
        findings
    }
}

configure::export!(PerClassSizing);
validate::export!(PerClassSizing);
