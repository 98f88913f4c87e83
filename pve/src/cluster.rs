//! The cluster files pmxcfs generates: `/etc/pve/.members` and `/etc/pve/.vmlist`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `.vmlist`: which node owns each VMID, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmList {
    pub version: u64,
    #[serde(default)]
    pub ids: BTreeMap<u32, VmListEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmListEntry {
    pub node: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u64,
}

impl VmList {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Writes the file in pmxcfs's layout.
    pub fn write(&self) -> String {
        let mut out = format!("{{\n\"version\": {}", self.version);
        if self.ids.is_empty() {
            out.push_str("\n\n}\n");
            return out;
        }
        out.push_str(",\n\"ids\": {\n");
        let rows: Vec<String> = self
            .ids
            .iter()
            .map(|(vmid, entry)| {
                format!(
                    "\"{vmid}\": {{ \"node\": \"{}\", \"type\": \"{}\", \"version\": {} }}",
                    entry.node, entry.kind, entry.version
                )
            })
            .collect();
        out.push_str(&rows.join(",\n"));
        out.push_str("}\n\n}\n");
        out
    }
}

/// `.members`: this node's name and the cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Members {
    pub nodename: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    #[serde(default)]
    pub nodelist: BTreeMap<String, MemberNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    pub version: u64,
    pub nodes: u32,
    pub quorate: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub id: u32,
    pub online: u8,
    #[serde(default)]
    pub ip: String,
}

impl Members {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Writes the file in pmxcfs's layout (standalone nodes have no cluster part).
    pub fn write(&self) -> String {
        let mut out = format!(
            "{{\n\"nodename\": \"{}\",\n\"version\": {}",
            self.nodename, self.version
        );
        if let Some(cluster) = &self.cluster {
            out.push_str(&format!(
                ",\n\"cluster\": {{ \"name\": \"{}\", \"version\": {}, \"nodes\": {}, \"quorate\": {} }},\n\"nodelist\": {{\n",
                cluster.name, cluster.version, cluster.nodes, cluster.quorate
            ));
            let rows: Vec<String> = self
                .nodelist
                .iter()
                .map(|(name, node)| {
                    format!(
                        "  \"{name}\": {{ \"id\": {}, \"online\": {}, \"ip\": \"{}\"}}",
                        node.id, node.online, node.ip
                    )
                })
                .collect();
            out.push_str(&rows.join(",\n"));
            out.push_str("\n  }");
        }
        out.push_str("\n}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmlist_layout_and_round_trip() {
        let mut list = VmList {
            version: 7,
            ids: BTreeMap::new(),
        };
        assert_eq!(list.write(), "{\n\"version\": 7\n\n}\n");
        assert_eq!(VmList::parse(&list.write()).unwrap(), list);
        for (vmid, node) in [(100, "pve1"), (101, "pve2")] {
            list.ids.insert(
                vmid,
                VmListEntry {
                    node: node.into(),
                    kind: "qemu".into(),
                    version: 3,
                },
            );
        }
        assert_eq!(
            list.write(),
            "{\n\"version\": 7,\n\"ids\": {\n\"100\": { \"node\": \"pve1\", \"type\": \"qemu\", \"version\": 3 },\n\"101\": { \"node\": \"pve2\", \"type\": \"qemu\", \"version\": 3 }}\n\n}\n"
        );
        assert_eq!(VmList::parse(&list.write()).unwrap(), list);
    }

    #[test]
    fn members_layout_and_round_trip() {
        let standalone = Members {
            nodename: "pve".into(),
            version: 0,
            ..Members::default()
        };
        assert_eq!(
            standalone.write(),
            "{\n\"nodename\": \"pve\",\n\"version\": 0\n}\n"
        );
        let mut clustered = Members {
            nodename: "pve1".into(),
            version: 5,
            cluster: Some(ClusterInfo {
                name: "lab".into(),
                version: 3,
                nodes: 2,
                quorate: 1,
            }),
            nodelist: BTreeMap::new(),
        };
        clustered.nodelist.insert(
            "pve1".into(),
            MemberNode {
                id: 1,
                online: 1,
                ip: "10.0.0.1".into(),
            },
        );
        clustered.nodelist.insert(
            "pve2".into(),
            MemberNode {
                id: 2,
                online: 1,
                ip: "10.0.0.2".into(),
            },
        );
        assert_eq!(Members::parse(&clustered.write()).unwrap(), clustered);
        assert_eq!(Members::parse(&standalone.write()).unwrap(), standalone);
    }
}
