//! Property strings: `default,key=value,key2=value2`, the value format of drives, NICs,
//! `smbios1`, `meta`, `boot` and more. Parts keep their order, so an untouched value writes
//! back exactly; [`PropertyString::canonical`] prints Proxmox's order.

use std::fmt;

/// Why a property string is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("format error - duplicate key in comma-separated list property: {0}")]
    DuplicateKey(String),
    #[error("format error - empty part in comma-separated list property")]
    EmptyPart,
    #[error("format error - value without key, but schema does not define a default key")]
    TwoDefaults,
    #[error("property value contains a comma or line break: {0:?}")]
    BadValue(String),
}

/// A parsed property string. A part without `=` is the default key's value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyString {
    parts: Vec<(Option<String>, String)>,
}

impl PropertyString {
    pub fn parse(text: &str) -> Result<Self, PropertyError> {
        let mut parts: Vec<(Option<String>, String)> = Vec::new();
        for part in text.split(',') {
            if part.is_empty() {
                return Err(PropertyError::EmptyPart);
            }
            let (key, value) = match part.split_once('=') {
                Some((key, value)) => (Some(key.to_owned()), value.to_owned()),
                None => (None, part.to_owned()),
            };
            if parts.iter().any(|(existing, _)| *existing == key) {
                return Err(match key {
                    Some(key) => PropertyError::DuplicateKey(key),
                    None => PropertyError::TwoDefaults,
                });
            }
            parts.push((key, value));
        }
        Ok(Self { parts })
    }

    /// The value given without a key (a drive's volume, a NIC's model).
    pub fn default_value(&self) -> Option<&str> {
        self.parts
            .iter()
            .find(|(key, _)| key.is_none())
            .map(|(_, value)| value.as_str())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|(k, _)| k.as_deref() == Some(key))
            .map(|(_, value)| value.as_str())
    }

    /// The keyed parts, in order.
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parts
            .iter()
            .filter_map(|(key, value)| key.as_deref().map(|key| (key, value.as_str())))
    }

    fn check(value: &str) -> Result<(), PropertyError> {
        if value.contains([',', '\n', '\r']) {
            return Err(PropertyError::BadValue(value.to_owned()));
        }
        Ok(())
    }

    /// Sets a keyed part in place, or appends it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), PropertyError> {
        Self::check(value)?;
        match self
            .parts
            .iter_mut()
            .find(|(k, _)| k.as_deref() == Some(key))
        {
            Some(part) => part.1 = value.to_owned(),
            None => self.parts.push((Some(key.to_owned()), value.to_owned())),
        }
        Ok(())
    }

    /// Sets the default value, keeping it first.
    pub fn set_default(&mut self, value: &str) -> Result<(), PropertyError> {
        Self::check(value)?;
        match self.parts.iter_mut().find(|(k, _)| k.is_none()) {
            Some(part) => part.1 = value.to_owned(),
            None => self.parts.insert(0, (None, value.to_owned())),
        }
        Ok(())
    }

    /// Removes the default value.
    pub fn remove_default(&mut self) -> Option<String> {
        let index = self.parts.iter().position(|(k, _)| k.is_none())?;
        Some(self.parts.remove(index).1)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self
            .parts
            .iter()
            .position(|(k, _)| k.as_deref() == Some(key))?;
        Some(self.parts.remove(index).1)
    }

    /// Proxmox's order: the default value first, then the keys sorted.
    pub fn canonical(&self) -> String {
        let mut keyed: Vec<(&str, &str)> = self.options().collect();
        keyed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out: Vec<String> = self
            .default_value()
            .map(str::to_owned)
            .into_iter()
            .collect();
        out.extend(
            keyed
                .into_iter()
                .map(|(key, value)| format!("{key}={value}")),
        );
        out.join(",")
    }
}

impl fmt::Display for PropertyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(key, value)| match key {
                Some(key) => format!("{key}={value}"),
                None => value.clone(),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_order_and_canonicalises() {
        let text = "local:100/vm-100-disk-0.qcow2,size=32G,discard=on,iothread=1";
        let parsed = PropertyString::parse(text).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(
            parsed.default_value(),
            Some("local:100/vm-100-disk-0.qcow2")
        );
        assert_eq!(parsed.get("size"), Some("32G"));
        assert_eq!(
            parsed.canonical(),
            "local:100/vm-100-disk-0.qcow2,discard=on,iothread=1,size=32G"
        );
    }

    #[test]
    fn refuses_duplicates_empty_parts_and_commas_in_values() {
        assert_eq!(
            PropertyString::parse("a=1,a=2"),
            Err(PropertyError::DuplicateKey("a".into()))
        );
        assert_eq!(PropertyString::parse("x,,y"), Err(PropertyError::EmptyPart));
        assert_eq!(
            PropertyString::parse("x,y"),
            Err(PropertyError::TwoDefaults)
        );
        let mut parsed = PropertyString::parse("x").unwrap();
        assert!(parsed.set("tag", "1,2").is_err());
        parsed.set("tag", "12").unwrap();
        parsed.set_default("y").unwrap();
        assert_eq!(parsed.to_string(), "y,tag=12");
        assert_eq!(parsed.remove("tag").as_deref(), Some("12"));
    }
}
