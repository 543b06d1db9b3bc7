//! The OS layer: thin safe wrappers over the calls the standard library
//! does not offer, one file per concern. Each wrapper is safe to call; each
//! `unsafe` block says why it is sound. It imports nothing from the rest of
//! the crate: what it needs from above (a descriptor number, a path) comes
//! in as an argument.
//!
//! The unsafe code that belongs to one owner lives with it instead: the
//! green coroutine stacks and the current coroutine in `green/`, `PreFork`'s
//! shared status table in `strategy/prefork/` (the shared memory it lives
//! in is `shared_memory.rs`, here).

mod epoll;
mod fd;
mod poll;
mod process;
mod shared_memory;
mod signals;
mod socket;

pub(crate) use epoll::Epoll;
pub(crate) use fd::{adopt_fd, close_in_child};
pub(crate) use poll::{poll_read, readable_now, wait_writable, Ready};
pub(crate) use process::{
    die_with_parent, exit_immediately, fork, getpid, kill, set_thread_name, spawn_with_fds,
    thread_count, waitpid, ChildExit, Fork, Spawn,
};
pub(crate) use shared_memory::{Shared, ZeroAtomics};
pub(crate) use signals::{
    block_term, child_leave_requested, child_leave_signal, child_runs_loop, child_stop_fd,
    child_stop_onto, child_stop_requested, drain_child_stop, ignore_sigint, ignore_signal,
    install_child_leave, install_child_stop, on_signal_flag_and_byte, reset_signal_dispositions,
    set_second_term_exits, IdleRead,
};
#[cfg(feature = "green")]
pub(crate) use socket::recv_nowait;
pub(crate) use socket::{send_nowait, shutdown_socket};
