//! `pve-sim init`: lays out a simulated cluster, with optional template VMs whose disks are
//! real qcow2 images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proxlab_pve::cluster::{ClusterInfo, MemberNode, Members};
use proxlab_pve::ident::{DEFAULT_MAC_PREFIX, random_mac, random_uuid};
use proxlab_pve::storage_cfg::{Storage, StorageConfig};

use crate::args::{Args, param_error};
use crate::qemu_img;
use crate::sim::{Outcome, Sim, fail};
use crate::store;

/// The storages a new simulated cluster has: node-local `local`, and `shared`, which every
/// node sees (like an NFS export).
fn default_storages() -> StorageConfig {
    let mut local = Storage::new("dir", "local");
    local.set("path", Some("/var/lib/vz"));
    local.set("content", Some("iso,vztmpl,backup,images,rootdir,snippets"));
    let mut shared = Storage::new("dir", "shared");
    shared.set("path", Some("/mnt/pve/shared"));
    shared.set("content", Some("images,iso"));
    shared.set("shared", Some("1"));
    StorageConfig {
        storages: vec![local, shared],
    }
}

fn symlink_tools(root: &Path) -> Outcome {
    let exe = std::env::current_exe()?;
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    for tool in ["qm", "pvesh", "pvesm", "qemu-img"] {
        let link = bin.join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&exe, &link)?;
    }
    Ok(())
}

/// Creates a template VM with a real qcow2 base disk of `size_bytes`.
pub fn create_template(
    sim: &Sim,
    vmid: u32,
    name: &str,
    size_bytes: u64,
    storage_id: &str,
) -> Outcome {
    let storages = crate::storage::Storages::load(sim)?;
    let storage = storages.get(storage_id)?;
    let dir = storages.image_dir(sim, storage, vmid, &sim.node);
    std::fs::create_dir_all(&dir)?;
    let base = format!("base-{vmid}-disk-0.qcow2");
    qemu_img::create(sim, &dir.join(&base), "qcow2", size_bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(&base), std::fs::Permissions::from_mode(0o444))?;
    let mut rng = rand::rng();
    let config = format!(
        "boot: order=scsi0;net0\ncores: 2\nmemory: 2048\nmeta: creation-qemu={},ctime={}\nname: {name}\n\
         net0: virtio={},bridge=vmbr0,firewall=1\nostype: l26\nscsi0: {storage_id}:{vmid}/{base},iothread=1,size={}\n\
         scsihw: virtio-scsi-single\nsmbios1: uuid={}\nsockets: 1\ntemplate: 1\nvmgenid: {}\n",
        crate::qm::edit::QEMU_VERSION,
        Sim::now(),
        random_mac(DEFAULT_MAC_PREFIX, &mut rng),
        qemu_img::format_size(size_bytes),
        random_uuid(&mut rng),
        random_uuid(&mut rng),
    );
    store::create_exclusive(sim, vmid, &config, |node| {
        format!("unable to create VM {vmid} - VM {vmid} already exists on node '{node}'")
    })
}

/// An ISO image `NAME.iso[:SIZE]` (a sparse file; 1 MiB unless a size is given), as an
/// upload to the node's local storage would leave it.
fn make_iso(dir: &Path, spec: &str) -> Outcome {
    let (name, size) = spec.split_once(':').unwrap_or((spec, "1M"));
    let valid = name.ends_with(".iso")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(param_error(
            "iso",
            "expected NAME.iso[:SIZE], for example debian-12.iso:600M",
        ));
    }
    let size = qemu_img::parse_size(size)
        .ok_or_else(|| param_error("iso", &format!("invalid size '{size}'")))?;
    let file = std::fs::File::create(dir.join(name))?;
    file.set_len(size)?;
    Ok(())
}

/// A new cluster's root CA, as `pvecm` makes one when the first node is installed: every
/// cluster has its own, so its fingerprint tells clusters of the same name apart.
fn cluster_ca_pem() -> std::io::Result<String> {
    let fail = |err: rcgen::Error| std::io::Error::other(err.to_string());
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Proxmox Virtual Environment");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "PVE Cluster Manager CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    Ok(params.self_signed(&key).map_err(fail)?.pem())
}

pub fn run(argv: &[String]) -> Outcome {
    let mut args = Args::parse(argv)?;
    let root: PathBuf = args
        .take("root")
        .ok_or_else(|| param_error("root", "property is missing and it is not optional"))?
        .into();
    let nodes: Vec<String> = args
        .take("nodes")
        .unwrap_or_else(|| "pve".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let template_storage = args
        .take("template-storage")
        .unwrap_or_else(|| "local".into());
    let mut templates = Vec::new();
    while let Some(spec) = args.take("template") {
        templates.push(spec);
    }
    let mut isos = Vec::new();
    while let Some(spec) = args.take("iso") {
        isos.push(spec);
    }
    let qemu = args.take("qemu");
    let cluster_name = args.take("cluster");
    args.finish()?;
    if let Some(name) = &cluster_name {
        proxlab_pve::ident::validate_vm_name(name).map_err(|err| param_error("cluster", &err))?;
    }
    for node in &nodes {
        proxlab_pve::ident::validate_vm_name(node).map_err(|err| param_error("nodes", &err))?;
    }
    if root.join("etc/pve").exists() {
        return fail(format!(
            "{} already holds a simulated cluster",
            root.display()
        ));
    }
    for node in &nodes {
        std::fs::create_dir_all(root.join("etc/pve/nodes").join(node).join("qemu-server"))?;
    }
    for dir in ["var/run/qemu-server", "var/lock/qemu-server", "sim/vms"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    if let Some(qemu) = &qemu {
        crate::qemu::enable(&root, qemu)?;
    }
    std::fs::write(
        root.join("etc/pve/storage.cfg"),
        default_storages().to_string(),
    )?;
    std::fs::write(
        root.join("etc/pve/datacenter.cfg"),
        format!("mac_prefix: {DEFAULT_MAC_PREFIX}\n"),
    )?;
    // Several nodes are always a cluster; one node is standalone unless given a cluster.
    let clustered = nodes.len() > 1 || cluster_name.is_some();
    let mut nodelist = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        nodelist.insert(
            node.clone(),
            MemberNode {
                id: i as u32 + 1,
                online: 1,
                ip: format!("127.0.0.{}", i + 1),
            },
        );
    }
    let members = Members {
        nodename: nodes[0].clone(),
        version: 1,
        cluster: clustered.then(|| ClusterInfo {
            name: cluster_name.clone().unwrap_or_else(|| "sim".into()),
            version: 1,
            nodes: nodes.len() as u32,
            quorate: 1,
        }),
        nodelist: if clustered { nodelist } else { BTreeMap::new() },
    };
    std::fs::write(root.join("etc/pve/.members"), members.write())?;
    std::fs::write(root.join("etc/pve/pve-root-ca.pem"), cluster_ca_pem()?)?;
    symlink_tools(&root)?;
    let sim = Sim {
        root: root.clone(),
        node: nodes[0].clone(),
    };
    for node in &nodes {
        let storages = crate::storage::Storages::load(&sim)?;
        for storage in storages.on_node(node) {
            let dir = storages.root(&sim, storage, node);
            std::fs::create_dir_all(dir.join("images"))?;
            std::fs::create_dir_all(dir.join("template/iso"))?;
        }
        if let Some(local) = storages
            .on_node(node)
            .find(|storage| storage.holds("iso") && !storage.is_shared())
        {
            let dir = storages.root(&sim, local, node).join("template/iso");
            for spec in &isos {
                make_iso(&dir, spec)?;
            }
        }
    }
    store::refresh_vmlist(&sim)?;
    for (i, spec) in templates.iter().enumerate() {
        let (name, size) = spec.split_once(':').ok_or_else(|| {
            param_error("template", "expected NAME:SIZE, for example debian12:1G")
        })?;
        let size = qemu_img::parse_size(size)
            .ok_or_else(|| param_error("template", &format!("invalid size '{size}'")))?;
        let vmid = 9000 + i as u32;
        create_template(&sim, vmid, name, size, &template_storage)?;
        println!("template {vmid} ({name}) on {}", sim.node);
    }
    println!(
        "simulated cluster with nodes {} in {}",
        nodes.join(", "),
        root.display()
    );
    println!("tools: {}", root.join("bin").display());
    Ok(())
}
