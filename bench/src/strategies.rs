//! Our strategies as the bench builds them: by the library's names, with a
//! stack size or a keep-alive of the bench's choosing.

use std::io;
use std::time::Duration;

use socketserver::Strategy;

/// One of socketserver's strategies, by its library name (one of
/// [`socketserver::strategy::NAMES`]), with the library's defaults except
/// `stack` bytes of stack for the threads of `threading` and `pool` (the
/// coroutines of `green`) and `keep_alive` for `threading`'s threads, when
/// given. The library's names are the only list: bench keeps none of its own.
pub fn build_strategy(
    name: &str,
    stack: Option<usize>,
    keep_alive: Option<Duration>,
) -> io::Result<Box<dyn Strategy>> {
    Ok(match name {
        "threading" if stack.is_some() || keep_alive.is_some() => {
            let mut t = socketserver::Threading::new();
            if let Some(keep) = keep_alive {
                t = t.keep_alive(keep);
            }
            if let Some(n) = stack {
                t = t.stack_size(n);
            }
            Box::new(t)
        }
        "pool" if stack.is_some() => {
            Box::new(socketserver::Pool::default().stack_size(stack.unwrap_or_default()))
        }
        "green" if stack.is_some() => {
            Box::new(socketserver::Green::new().stack_size(stack.unwrap_or_default()))
        }
        _ => socketserver::strategy::from_name(name)?,
    })
}
