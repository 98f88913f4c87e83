//! Proxmox-style command lines: positional arguments and `--option value` (or `-option
//! value`) pairs; booleans take a value.

use std::collections::BTreeMap;

use crate::sim::{Failure, Outcome};

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    pub options: BTreeMap<String, String>,
    /// Everything after `--`.
    pub rest: Vec<String>,
}

/// Proxmox's parameter error: exit 255 with `400 Parameter verification failed.`
pub fn param_error(param: &str, message: &str) -> Failure {
    Failure {
        message: format!("400 Parameter verification failed.\n{param}: {message}"),
        code: 255,
    }
}

impl Args {
    pub fn parse(argv: &[String]) -> Outcome<Self> {
        let mut args = Args::default();
        let mut iter = argv.iter();
        while let Some(arg) = iter.next() {
            if arg == "--" {
                args.rest = iter.cloned().collect();
                break;
            }
            let name = arg.strip_prefix("--").or_else(|| {
                arg.strip_prefix('-')
                    .filter(|n| !n.is_empty() && !n.starts_with(|c: char| c.is_ascii_digit()))
            });
            match name {
                Some(name) => {
                    let (name, value) = match name.split_once('=') {
                        Some((name, value)) => (name.to_owned(), value.to_owned()),
                        None => {
                            let value = iter
                                .next()
                                .ok_or_else(|| param_error(name, "missing value"))?;
                            (name.to_owned(), value.clone())
                        }
                    };
                    if args.options.insert(name.clone(), value).is_some() {
                        return Err(param_error(&name, "duplicate parameter"));
                    }
                }
                None => args.positional.push(arg.clone()),
            }
        }
        Ok(args)
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.options.remove(name)
    }

    /// A boolean option (`1|0|yes|no|on|off|true|false`), default `false`.
    pub fn flag(&mut self, name: &str) -> Outcome<bool> {
        match self.take(name) {
            None => Ok(false),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "1" | "yes" | "on" | "true" => Ok(true),
                "0" | "no" | "off" | "false" => Ok(false),
                _ => Err(param_error(
                    name,
                    &format!("type check ('boolean') failed - got '{value}'"),
                )),
            },
        }
    }

    pub fn number(&mut self, name: &str) -> Outcome<Option<u64>> {
        self.take(name)
            .map(|value| {
                value.parse().map_err(|_| {
                    param_error(
                        name,
                        &format!("type check ('integer') failed - got '{value}'"),
                    )
                })
            })
            .transpose()
    }

    /// The `index`th positional argument as a VMID.
    pub fn vmid(&self, index: usize) -> Outcome<u32> {
        let name = if index == 0 { "vmid" } else { "newid" };
        let Some(text) = self.positional.get(index) else {
            return Err(param_error(
                name,
                "property is missing and it is not optional",
            ));
        };
        let vmid: u32 = text
            .parse()
            .ok()
            .filter(|_| !text.starts_with('0'))
            .ok_or_else(|| {
                param_error(
                    name,
                    &format!("type check ('integer') failed - got '{text}'"),
                )
            })?;
        proxlab_pve::volid::validate_vmid(vmid)
            .map_err(|_| param_error(name, "value must have a minimum value of 100"))?;
        Ok(vmid)
    }

    pub fn positional(&self, index: usize, name: &str) -> Outcome<String> {
        self.positional
            .get(index)
            .cloned()
            .ok_or_else(|| param_error(name, "property is missing and it is not optional"))
    }

    /// Fails on options the command does not know.
    pub fn finish(&self) -> Outcome {
        match self.options.keys().next() {
            Some(name) => Err(param_error(
                name,
                "property is not defined in schema and the schema does not allow additional properties",
            )),
            None => Ok(()),
        }
    }
}
