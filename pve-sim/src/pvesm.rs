//! The simulated `pvesm`: `status`, `list`, `path`.

use crate::args::Args;
use crate::sim::{Failure, Outcome, Sim, fail};
use crate::storage::Storages;

pub fn run(argv: &[String]) -> Outcome {
    let Some(command) = argv.first() else {
        return Err(Failure {
            message: "USAGE: pvesm <COMMAND> [ARGS] [OPTIONS]".into(),
            code: 255,
        });
    };
    let sim = Sim::from_env()?;
    let mut args = Args::parse(&argv[1..])?;
    let storages = Storages::load(&sim)?;
    match command.as_str() {
        "status" => {
            let only = args.take("storage");
            let _content = args.take("content");
            args.finish()?;
            let shown: Vec<_> = storages
                .on_node(&sim.node)
                .filter(|s| only.as_deref().is_none_or(|id| id == s.id))
                .collect();
            let width = shown.iter().map(|s| s.id.len()).max().unwrap_or(4) + 1;
            println!(
                "{:<width$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>8}",
                "Name", "Type", "Status", "Total (KiB)", "Used (KiB)", "Available (KiB)", "%"
            );
            for storage in shown {
                let (total, used, avail) = if storage.is_disabled() {
                    (0, 0, 0)
                } else {
                    storages.usage(&sim, storage, &sim.node)
                };
                let status = if storage.is_disabled() {
                    "disabled"
                } else {
                    "active"
                };
                let percent = if storage.is_disabled() || total == 0 {
                    "N/A".to_owned()
                } else {
                    format!("{:>7.2}%", used as f64 * 100.0 / total as f64)
                };
                println!(
                    "{:<width$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>8}",
                    storage.id,
                    storage.kind,
                    status,
                    total / 1024,
                    used / 1024,
                    avail / 1024,
                    percent
                );
            }
            Ok(())
        }
        "list" => {
            let id = args.positional(0, "storage")?;
            let content = args.take("content");
            let vmid = args.number("vmid")?;
            args.finish()?;
            let storage = storages.get(&id)?;
            let volumes: Vec<_> = storages
                .list(&sim, storage, &sim.node)
                .into_iter()
                .filter(|v| content.as_deref().is_none_or(|c| c == v.content))
                .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id as u32)))
                .collect();
            let volid_width = volumes
                .iter()
                .map(|v| v.volid.len())
                .max()
                .unwrap_or(5)
                .max(5);
            let size_width = volumes
                .iter()
                .map(|v| v.size.to_string().len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!(
                "{:<volid_width$} {:<7} {:<9} {:>size_width$} VMID",
                "Volid", "Format", "Type", "Size"
            );
            for volume in volumes {
                let vmid = volume.vmid.map(|id| format!(" {id}")).unwrap_or_default();
                println!(
                    "{:<volid_width$} {:<7} {:<9} {:>size_width$}{vmid}",
                    volume.volid, volume.format, volume.content, volume.size
                );
            }
            Ok(())
        }
        "path" => {
            let volid = args.positional(0, "volume")?;
            args.finish()?;
            println!("{}", storages.path(&sim, &volid, &sim.node)?.display());
            Ok(())
        }
        other => fail(format!("unknown command 'pvesm {other}'")),
    }
}
