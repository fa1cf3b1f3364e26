//! A fence around calls into Automerge on bytes from outside.
//!
//! Automerge's decoders and `apply_changes` assume well-formed histories and panic on some that
//! are not (fuzzing found several: fuzz/README.md). The server refuses such changes at ingest
//! (docs/SECURITY.md, "Document shape"), but a replica must not die of one that slips through or
//! of a damaged store: every call that hands Automerge bytes it did not write itself runs inside
//! [`fenced`], and a panic becomes an error the caller reports, with nothing stored.

/// Runs `f`, turning a panic into `Err(message)`. The work `f` did is dropped with it: callers
/// pass in what they own and keep nothing a panic may have left half-changed.
pub fn fenced<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::fenced;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(fenced(|| 7), Ok(7));
        assert_eq!(fenced(|| -> u8 { panic!("index {} out of range", 3) }), Err("index 3 out of range".to_owned()));
        assert_eq!(fenced(|| -> u8 { std::panic::panic_any(5u32) }), Err("a panic without a message".to_owned()));
    }
}
