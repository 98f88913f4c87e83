//! What a component needs before it runs: the memory its core modules start with. A plugin
//! whose memory starts above the node's cap could never be instantiated; the agent (and
//! `plugin check`) says so when it loads it, not at every call.

use wasmparser::{Parser, Payload};

/// The largest memory any core module of `wasm` starts with, in bytes.
pub(super) fn largest_initial_memory(wasm: &[u8]) -> Result<u64, String> {
    let mut largest = 0u64;
    for payload in Parser::new(0).parse_all(wasm) {
        let Payload::MemorySection(memories) = payload.map_err(|err| err.to_string())? else {
            continue;
        };
        for memory in memories {
            let memory = memory.map_err(|err| err.to_string())?;
            let page_bytes = 1u64 << memory.page_size_log2.unwrap_or(16);
            largest = largest.max(memory.initial.saturating_mul(page_bytes));
        }
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_initial_memory_of_every_module_counts() {
        // Two core modules: 2 pages, and 17 pages with a maximum of 100.
        let module = |memory: &[u8]| {
            let mut bytes = b"\0asm\x01\0\0\0".to_vec();
            bytes.push(5); // the memory section
            bytes.push(memory.len() as u8 + 1);
            bytes.push(1); // one memory
            bytes.extend_from_slice(memory);
            bytes
        };
        assert_eq!(largest_initial_memory(&module(&[0, 2])), Ok(2 << 16));
        assert_eq!(largest_initial_memory(&module(&[1, 17, 100])), Ok(17 << 16));
        assert_eq!(largest_initial_memory(b"\0asm\x01\0\0\0"), Ok(0));
        assert!(largest_initial_memory(b"not wasm").is_err());
    }
}
