//! `proxlab-agent plugin test`: a plugin run against a directory of cases an author keeps
//! beside it. Each case is a JSON file naming a hook, its input, and what the result must
//! hold (or what the error must say).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::HookFacts;
use super::host::{Plugin, PluginHost};
use super::invoke::invoke;
use super::manifest::Hook;

/// One case, as its file has it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    hook: Hook,
    input: HookFacts,
    /// What the result must hold: objects may have more keys than named here; lists and
    /// values must be equal.
    #[serde(default)]
    expect: Option<Value>,
    /// Words the call's error must contain: the case expects the call to fail.
    #[serde(default)]
    expect_error: Option<String>,
}

/// What one case gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    pub file: PathBuf,
    /// `None` when it passed; otherwise why not.
    pub failure: Option<String>,
}

/// Runs every `*.json` case in `dir`, in name order.
pub fn run_cases(
    host: &PluginHost,
    plugin: &Plugin,
    dir: &Path,
) -> std::io::Result<Vec<CaseOutcome>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "json"));
    files.sort();
    Ok(files
        .into_iter()
        .map(|file| {
            let failure = run_case(host, plugin, &file).err();
            CaseOutcome { file, failure }
        })
        .collect())
}

fn run_case(host: &PluginHost, plugin: &Plugin, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|err| format!("reading it: {err}"))?;
    let case: Case = serde_json::from_str(&text).map_err(|err| format!("reading it: {err}"))?;
    let outcome = invoke(host, plugin, case.hook, &case.input);
    match (outcome, case.expect_error) {
        (Err(err), Some(words)) if err.to_string().contains(&words) => Ok(()),
        (Err(err), Some(words)) => Err(format!("the error was {err:?}, not about {words:?}")),
        (Err(err), None) => Err(format!("the call failed: {err}")),
        (Ok(invoked), Some(words)) => Err(format!(
            "expected an error about {words:?}, but the call gave {}",
            invoked.result
        )),
        (Ok(invoked), None) => match case.expect {
            Some(expected) if !holds(&expected, &invoked.result) => Err(format!(
                "expected {expected}, but the call gave {}",
                invoked.result
            )),
            _ => Ok(()),
        },
    }
}

/// Whether `actual` holds `expected`: every key of an expected object is in the actual one
/// with a value that holds it; anything else is equal.
fn holds(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => expected
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|actual| holds(value, actual))),
        _ => expected == actual,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_expectation_names_only_what_it_checks() {
        let result = json!({"edits": [{"set": ["tags", "vlan-142"]}], "config": [["a", "b"]]});
        assert!(holds(
            &json!({"edits": [{"set": ["tags", "vlan-142"]}]}),
            &result
        ));
        assert!(holds(&json!({}), &result));
        assert!(!holds(&json!({"edits": []}), &result));
        assert!(!holds(&json!({"missing": 1}), &result));
        // Lists are compared whole: an edit too many is a difference.
        assert!(!holds(&json!([1]), &json!([1, 2])));
        assert!(holds(&json!("x"), &json!("x")));
    }
}
