//! The one integration-test binary: a module per area, helpers in `util`.

mod util;

/// Every test also checks that nothing allocates between clone and exec (DESIGN.md §3).
#[global_allocator]
static ALLOC: rsandbox::CheckedAlloc = rsandbox::CheckedAlloc;

mod cli;
mod daemon;
mod files;
mod filters;
mod gpu;
mod hostile;
mod interpreters;
mod io;
mod isolation;
mod lifecycle;
mod limits;
mod server;
mod sessions;
