//! `pve-sim`, and `qm`, `pvesh`, `pvesm` when called through symlinks of those names.

use std::path::Path;
use std::process::ExitCode;

use pve_sim::sim::{Outcome, Sim};
use pve_sim::{init, pvesh, pvesm, qm, tools, vmproc};

fn dispatch(argv: &[String]) -> Outcome {
    let program = argv
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("pve-sim");
    let (tool, rest) = match program {
        "qm" | "pvesh" | "pvesm" | "qemu-img" => (program, &argv[1..]),
        _ => match argv.get(1) {
            Some(tool) => (tool.as_str(), &argv[2..]),
            None => return tools::unknown(""),
        },
    };
    match tool {
        "qm" => qm::run(rest),
        "pvesh" => pvesh::run(rest),
        "pvesm" => pvesm::run(rest),
        "qemu-img" => pve_sim::qemu_img::wrapper(rest),
        "init" => init::run(rest),
        "canon" => tools::canon(rest),
        "script" => tools::script(rest),
        "fault" => tools::fault(rest),
        "hold-lock" => tools::hold_lock(rest),
        "vm-process" => {
            let sim = Sim::from_env()?;
            let vmid = rest
                .first()
                .and_then(|id| id.parse().ok())
                .ok_or("vm-process needs a VMID")?;
            vmproc::run(&sim, vmid)
        }
        other => tools::unknown(other),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match dispatch(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("{}", failure.message);
            }
            ExitCode::from(u8::try_from(failure.code).unwrap_or(255))
        }
    }
}
