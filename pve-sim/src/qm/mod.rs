//! The simulated `qm`.

mod clone;
mod console;
mod disk;
pub mod edit;
pub mod guest;
pub mod info;
mod power;
mod resize;
mod snapshot;

use crate::args::Args;
use crate::script::Faults;
use crate::sim::{Failure, Outcome, Sim};

const USAGE: &str = "USAGE: qm <COMMAND> [ARGS] [OPTIONS]
       qm clone <vmid> <newid> [OPTIONS]
       qm config <vmid> [OPTIONS]
       qm create <vmid> [OPTIONS]
       qm delsnapshot <vmid> <snapname> [OPTIONS]
       qm destroy <vmid> [OPTIONS]
       qm disk import <vmid> <source> <storage> [OPTIONS]
       qm disk rescan  [OPTIONS]
       qm disk resize <vmid> <disk> <size> [OPTIONS]
       qm guest cmd <vmid> <command>
       qm guest exec <vmid> [<extra-args>] [OPTIONS]
       qm list  [OPTIONS]
       qm listsnapshot <vmid>
       qm pending <vmid>
       qm reboot <vmid> [OPTIONS]
       qm reset <vmid> [OPTIONS]
       qm resize <vmid> <disk> <size> [OPTIONS]
       qm resume <vmid> [OPTIONS]
       qm rollback <vmid> <snapname> [OPTIONS]
       qm set <vmid> [OPTIONS]
       qm shutdown <vmid> [OPTIONS]
       qm snapshot <vmid> <snapname> [OPTIONS]
       qm start <vmid> [OPTIONS]
       qm status <vmid> [OPTIONS]
       qm stop <vmid> [OPTIONS]
       qm suspend <vmid> [OPTIONS]
       qm template <vmid> [OPTIONS]
       qm terminal <vmid> [OPTIONS]
       qm unlock <vmid>
       qm vncproxy <vmid>";

pub fn run(argv: &[String]) -> Outcome {
    let Some(command) = argv.first() else {
        return Err(Failure {
            message: USAGE.into(),
            code: 255,
        });
    };
    let sim = Sim::from_env()?;
    Faults::load(&sim)?.apply_latency(&format!("qm {command}"));
    let args = Args::parse(&argv[1..])?;
    match command.as_str() {
        "list" => info::list(&sim, args),
        "status" => info::status(&sim, args),
        "config" => info::config(&sim, args),
        "pending" => info::pending(&sim, &args),
        "create" => edit::create(&sim, args),
        "set" => edit::set(&sim, args),
        "destroy" => edit::destroy(&sim, args),
        "unlock" => edit::unlock(&sim, &args),
        "start" => power::start(&sim, args),
        "stop" => power::stop(&sim, args),
        "shutdown" => power::shutdown(&sim, args),
        "reboot" => power::reboot(&sim, args),
        "reset" => power::reset(&sim, args),
        "suspend" => power::pause(&sim, args, true),
        "resume" => power::pause(&sim, args, false),
        "resize" => resize::resize(&sim, args),
        "clone" => clone::clone(&sim, args),
        "template" => clone::template(&sim, args),
        "snapshot" => snapshot::snapshot(&sim, args),
        "listsnapshot" => snapshot::listsnapshot(&sim, &args),
        "rollback" => snapshot::rollback(&sim, args),
        "delsnapshot" => snapshot::delsnapshot(&sim, args),
        "guest" => guest::run(&sim, args),
        "vncproxy" => console::vncproxy(&sim, &args),
        "terminal" => console::terminal(&sim, args),
        "importdisk" => disk::import(&sim, args),
        "rescan" => disk::rescan(&sim, args),
        "disk" => {
            let mut args = args;
            let sub = args.positional(0, "command")?;
            args.positional.remove(0);
            match sub.as_str() {
                "import" => disk::import(&sim, args),
                "rescan" => disk::rescan(&sim, args),
                "resize" => resize::resize(&sim, args),
                other => Err(Failure {
                    message: format!("unknown command 'qm disk {other}'"),
                    code: 255,
                }),
            }
        }
        other => Err(Failure {
            message: format!("unknown command 'qm {other}'\n{USAGE}"),
            code: 255,
        }),
    }
}
