//! Stateful contexts: variables across cells, results and errors, streaming, timeouts and
//! interrupts, restarts, and a driver that turns hostile.

mod cli;
mod daemon;
mod ipython;
mod jupyter;
mod library;
