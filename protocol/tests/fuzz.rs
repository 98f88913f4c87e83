//! Everything a peer can send, fuzzed (proptest, a fixed number of cases so CI time stays
//! bounded): frame headers and bodies of every message type the link reads, mutations of
//! the golden messages, request bodies of every kind, and plugin manifests. Decoding may
//! refuse, but never panic, and a header never makes the reader allocate past the limit.

use std::path::Path;

use proptest::prelude::*;
use proxlab_protocol::base_copy::{BaseImport, BaseWrite};
use proxlab_protocol::clones::CloneMany;
use proxlab_protocol::frame::{FrameError, HEADER_LEN, body_len, decode};
use proxlab_protocol::plugin_manifest::Manifest;
use proxlab_protocol::plugins::PluginInstall;
use proxlab_protocol::vm_ops::{VmCreate, VmDestroy, VmPower, VmReset};
use proxlab_protocol::{
    EnrollRequest, EnrollResponse, EventFrame, Hello, RequestFrame, ResponseFrame, Welcome,
};

/// Decodes a body as every message the hub or an agent reads off the wire.
fn decode_all(body: &[u8]) {
    let _ = decode::<Hello>(body);
    let _ = decode::<Welcome>(body);
    let _ = decode::<EnrollRequest>(body);
    let _ = decode::<EnrollResponse>(body);
    let _ = decode::<EventFrame>(body);
    let _ = decode::<RequestFrame>(body);
    let _ = decode::<ResponseFrame>(body);
    let _ = decode::<VmCreate>(body);
    let _ = decode::<VmDestroy>(body);
    let _ = decode::<VmPower>(body);
    let _ = decode::<VmReset>(body);
    let _ = decode::<CloneMany>(body);
    let _ = decode::<BaseWrite>(body);
    let _ = decode::<BaseImport>(body);
    let _ = decode::<PluginInstall>(body);
}

fn golden_bodies() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn headers_are_checked_before_anything_is_allocated(header in any::<[u8; HEADER_LEN]>(), max in 1usize..(32 << 20)) {
        match body_len(header, max) {
            Ok(len) => prop_assert!(len > 0 && len <= max),
            Err(FrameError::TooLarge { len, .. }) => prop_assert!(len > max),
            Err(FrameError::Empty) => prop_assert_eq!(u32::from_be_bytes(header), 0),
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&body);
    }

    #[test]
    fn json_shaped_bodies_never_panic(body in "\\{(\"[a-z_]{1,12}\": ?(\"[ -~]{0,12}\"|-?[0-9]{1,20}|true|null|\\[\\]|\\{\\}),? ?){0,6}\\}") {
        decode_all(body.as_bytes());
    }

    #[test]
    fn mutated_golden_messages_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let bodies = golden_bodies();
        let mut body = bodies[which.index(bodies.len())].clone();
        for (at, byte) in edits {
            let at = at.index(body.len());
            body[at] = byte;
        }
        decode_all(&body);
    }

    #[test]
    fn manifests_never_panic(text in "((id|version|api|hooks|capabilities|[a-z]{1,6}) = (\"[ -~]{0,16}\"|\\[(\"[a-z-]{0,12}\",? ?){0,4}\\]|[0-9]{1,4})\n){0,6}") {
        if let Ok(manifest) = Manifest::parse(&text) {
            // What parses is what the agent relies on: a usable id and at least one hook.
            prop_assert!(!manifest.id.is_empty());
            prop_assert!(!manifest.hooks.is_empty());
        }
    }
}
