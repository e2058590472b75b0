//! The one integration-test binary: a module per area, helpers in `util`.

mod util;

mod cli;
mod files;
mod interpreters;
mod io;
mod isolation;
mod lifecycle;
