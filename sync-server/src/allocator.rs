//! How the server's allocator, mimalloc (ADR 14), hands memory back (ADR 16).
//!
//! mimalloc keeps freed pages for a while (1 s by default) before it returns them to the system,
//! so that a thread that frees and allocates again reuses them. Under a flood of large
//! short-lived request buffers on many threads that kept most of what the requests ever held
//! resident: `gridwork-bench abuse --seconds 30` peaked at 520-565 MB with the delay and at
//! 270-316 MB without it, for the same server CPU (the live heap itself stayed under 90 MB).
//! The binaries that run the server (`gridwork-sync-server`, the benchmark's server child) call
//! [`return_freed_memory_at_once`] first thing in `main`.

/// mimalloc's `mi_option_purge_delay` (its `mi_option_e`, the same index in versions 2 and 3;
/// libmimalloc-sys names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return freed pages to the system at once rather than after its purge delay.
/// Harmless when mimalloc is not the global allocator (the option then governs nothing).
#[allow(unsafe_code)]
pub fn return_freed_memory_at_once() {
    // SAFETY: `mi_option_set` stores an option value; mimalloc reads options atomically and
    // documents setting them at any time. The index is checked by the test below.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    #[allow(unsafe_code)]
    fn purge_delay() -> std::os::raw::c_long {
        // SAFETY: reading an option.
        unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // 1000 (milliseconds) is mimalloc 3's default purge delay, and no other option's default:
        // a wrong index would read something else here.
        assert_eq!(purge_delay(), 1000, "index {} is not mimalloc's purge delay", super::MI_OPTION_PURGE_DELAY);
        super::return_freed_memory_at_once();
        assert_eq!(purge_delay(), 0);
    }
}
