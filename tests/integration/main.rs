//! The one integration-test binary: a module per area, helpers in `util`.

// Shared helpers: feature expectations, the "nothing remains" fingerprint, the test lock.
mod util;

/// Every test also checks that nothing allocates between clone and exec (DESIGN.md §3).
#[global_allocator]
static ALLOC: rsandbox::CheckedAlloc = rsandbox::CheckedAlloc;

// The `rsandbox` command line: run and check, options, errors, network and binds.
mod cli;
// `rsandbox serve`: the native API, SandboxFusion, queue, access, signals, the fork server.
mod daemon;
// Networks allowlist and all: the egress proxy, loopback servers, the package index, the daemon.
mod egress;
// Files into and out of an instance's work dir: modes, refused paths, symlinks, limits.
mod files;
// Seccomp profiles (default, strict, Docker's), non-native ABIs, Landlock, `--strict`.
mod filters;
// Fake NVIDIA GPUs: the nodes an instance sees, the device controller, allocation, the CLI.
mod gpu;
// Real attacks by theme (filesystem, /proc, privilege, syscalls, network, resources, leaks).
mod hostile;
// Which interpreter runs (system, virtualenv, pyenv shims) and --rootfs trees.
mod interpreters;
// stdin, stdout and stderr (draining, caps, encodings) and the JSON report's shape.
mod io;
// Namespaces, the reaper as pid 1, the root's mounts, identity and the network.
mod isolation;
// Timeouts, nothing left after runs, a killed supervisor, threads, the warm pool, exits.
mod lifecycle;
// Memory, pids and CPU under cgroups v1 and v2, the fallback without cgroups, a soak.
mod limits;
// Terminals: each instance's private devpts, terminal runs (library, daemon, `run --tty`),
// attacks on ptys.
mod terminal;
// The harness for `rsandbox serve`: a daemon per test, raw HTTP, the host fingerprint.
mod server;
// Stateful contexts: cells, results, streaming, interrupts, restarts, a hostile driver.
mod context;
// The seed systems' own clients (microsandbox, AI Computer, E2B) against the daemon.
mod seed;
// Sessions over the daemon: persistence, files, Maze's API and the CLI, expiry and limits.
mod sessions;
