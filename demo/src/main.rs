//! `gridwork-demo`: the README's main command (see the library's documentation).

use clap::Parser;

/// The same allocator as the server binary (ADR 14): the demo's server is the real one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    gridwork_sync_server::allocator::return_freed_memory_at_once();
    let args = gridwork_demo::Args::parse();
    if let Err(e) = gridwork_demo::run(args) {
        eprintln!("gridwork-demo: {e}");
        std::process::exit(2);
    }
}
