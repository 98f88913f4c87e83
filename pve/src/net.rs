//! Network devices: `netN: <model>[=<MAC>],bridge=...,tag=...`.

use crate::config::VmConfig;
use crate::config::schema::split_index;
use crate::ident::is_unicast_mac;
use crate::propstring::{PropertyError, PropertyString};

/// The NIC models Proxmox accepts.
pub const MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// Why a NIC value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NicError {
    #[error(transparent)]
    Format(#[from] PropertyError),
    #[error("no NIC model given")]
    NoModel,
    #[error("unknown NIC model {0:?}")]
    UnknownModel(String),
    #[error("invalid MAC address {0:?}")]
    BadMac(String),
}

/// A network device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub index: u32,
    pub model: String,
    pub mac: Option<String>,
    /// Everything but the model and MAC, in order.
    pub options: PropertyString,
}

impl Nic {
    /// Parses a `netN` value, in the short (`virtio=MAC`) or long (`model=...,macaddr=...`)
    /// form.
    pub fn parse(index: u32, value: &str) -> Result<Self, NicError> {
        let mut options = PropertyString::parse(value)?;
        let (model, mac) = match options.remove("model") {
            Some(model) => (model, options.remove("macaddr")),
            None => match options.remove_default() {
                // `virtio,bridge=...`: a model without a MAC.
                Some(model) => (model, None),
                // `virtio=BC:24:11:...,bridge=...`: the model is the key of the MAC.
                None => {
                    let model = options
                        .options()
                        .map(|(key, _)| key.to_owned())
                        .find(|key| MODELS.contains(&key.as_str()))
                        .ok_or(NicError::NoModel)?;
                    let mac = options.remove(&model);
                    (model, mac)
                }
            },
        };
        if !MODELS.contains(&model.as_str()) {
            return Err(NicError::UnknownModel(model));
        }
        if let Some(found) = &mac
            && !is_unicast_mac(found)
        {
            return Err(NicError::BadMac(found.clone()));
        }
        Ok(Self {
            index,
            model,
            mac,
            options,
        })
    }

    pub fn bridge(&self) -> Option<&str> {
        self.options.get("bridge")
    }

    /// The VLAN tag, if any.
    pub fn tag(&self) -> Option<u16> {
        self.options.get("tag").and_then(|tag| tag.parse().ok())
    }

    /// The value in Proxmox's canonical form: `model=MAC` first, then options sorted.
    pub fn canonical_value(&self) -> String {
        let head = match &self.mac {
            Some(mac) => format!("{}={mac}", self.model),
            None => self.model.clone(),
        };
        let rest = self.options.canonical();
        if rest.is_empty() {
            head
        } else {
            format!("{head},{rest}")
        }
    }
}

impl VmConfig {
    /// The NICs of the main section, sorted by index; invalid ones are skipped.
    pub fn nics(&self) -> Vec<Nic> {
        let mut nics: Vec<Nic> = self
            .main()
            .entries()
            .into_iter()
            .filter_map(|(key, value)| match split_index(key) {
                ("net", Some(index)) => Nic::parse(index, value).ok(),
                _ => None,
            })
            .collect();
        nics.sort_by_key(|nic| nic.index);
        nics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form() {
        let nic = Nic::parse(0, "virtio=BC:24:11:2C:69:EC,firewall=1,bridge=vmbr0,tag=20").unwrap();
        assert_eq!(nic.model, "virtio");
        assert_eq!(nic.mac.as_deref(), Some("BC:24:11:2C:69:EC"));
        assert_eq!(nic.bridge(), Some("vmbr0"));
        assert_eq!(nic.tag(), Some(20));
        assert_eq!(
            nic.canonical_value(),
            "virtio=BC:24:11:2C:69:EC,bridge=vmbr0,firewall=1,tag=20"
        );
    }

    #[test]
    fn long_form_and_no_mac() {
        let nic = Nic::parse(1, "model=e1000,macaddr=bc:24:11:00:00:01,bridge=vmbr1").unwrap();
        assert_eq!(
            nic.canonical_value(),
            "e1000=bc:24:11:00:00:01,bridge=vmbr1"
        );
        let bare = Nic::parse(2, "virtio,bridge=vmbr0").unwrap();
        assert_eq!(bare.mac, None);
        assert_eq!(bare.canonical_value(), "virtio,bridge=vmbr0");
    }

    #[test]
    fn bad_values() {
        assert_eq!(Nic::parse(0, "bridge=vmbr0"), Err(NicError::NoModel));
        assert_eq!(
            Nic::parse(0, "model=tulip"),
            Err(NicError::UnknownModel("tulip".into()))
        );
        assert!(matches!(
            Nic::parse(0, "virtio=01:00:5E:00:00:01"),
            Err(NicError::BadMac(_))
        ));
    }
}
