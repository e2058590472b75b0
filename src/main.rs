//! The `rsandbox` binary: a thin layer over the library (see `cli`).

mod cli;

use clap::Parser;

/// Debug builds abort on any allocation between clone and exec (DESIGN.md §3).
#[cfg(debug_assertions)]
#[global_allocator]
static ALLOC: rsandbox::CheckedAlloc = rsandbox::CheckedAlloc;

fn main() {
    let args = cli::Cli::parse();
    let code = match &args.cmd {
        cli::Cmd::Run(a) => cli::run(a),
        cli::Cmd::Serve(a) => cli::serve::serve(a),
        cli::Cmd::Session(a) => cli::session::main(a),
        cli::Cmd::Repl(a) => cli::repl::repl(a),
        cli::Cmd::Check { json } => cli::check(*json),
    };
    std::process::exit(code);
}
