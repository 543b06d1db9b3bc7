//! A stack overflow in a coroutine ends that coroutine alone.
//!
//! A coroutine that runs into the guard below its stack faults
//! (`SIGSEGV`). A handler for it, installed once per process and run on an
//! alternate signal stack (`sigaltstack`, one per worker thread), looks at
//! the fault: when it hit the guard of the coroutine this thread is running
//! (armed by the worker around every resume), it makes that coroutine
//! return [`Ended::Overflowed`] to its worker at once (corosensei's trap
//! support: the coroutine's stack is reset, nothing on it is dropped). Any
//! other fault goes to the handler installed before (Rust's own, which
//! reports a thread's stack overflow) or, if none, kills the process as
//! before: the default action is restored and the faulting instruction
//! runs again.
//!
//! What the abandoned code owned on its stack is leaked, not dropped; a
//! lock it held stays held. The worker then releases what the request
//! registered with [`Abandon`](super::abandon) (its connection and its
//! place in the server's registry).

use std::cell::Cell;
use std::sync::OnceLock;

use corosensei::trap::{CoroutineTrapHandler, TrapHandlerRegs};

use super::coroutine::{Co, Ended};

/// The coroutine this thread runs now, as the fault handler needs it.
#[derive(Clone, Copy)]
struct Armed {
    trap: CoroutineTrapHandler<Ended>,
    /// Its guard: `[lo, hi)`.
    guard: (usize, usize),
}

thread_local! {
    // Const-initialised and without a destructor: reading it in a signal
    // handler neither allocates nor registers anything.
    static ARMED: Cell<Option<Armed>> = const { Cell::new(None) };
}

/// The dispositions of `SIGSEGV` and `SIGBUS` before ours.
struct Previous {
    segv: libc::sigaction,
    bus: libc::sigaction,
}

// SAFETY: plain data (handler addresses, flags and masks), written once
// before it is shared and only read afterwards.
unsafe impl Send for Previous {}
// SAFETY: as above.
unsafe impl Sync for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// Installs the fault handler (once per process) and gives the calling
/// thread an alternate signal stack if it has none big enough; the guard
/// returned removes that stack when the thread's worker ends. Where the
/// handler cannot be installed, or on a platform whose registers it does
/// not know, an overflow still ends the process.
pub(crate) fn prepare_thread() -> AltStack {
    if supported() {
        PREVIOUS.get_or_init(install);
    }
    AltStack::install()
}

/// Whether this platform's fault context is understood here.
fn supported() -> bool {
    cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
}

fn install() -> Previous {
    // SAFETY: `sigaction` structs are plain data, zero is a valid value;
    // `on_fault` has the signature SA_SIGINFO asks for and lives forever.
    // The previous dispositions are kept for the faults that are not ours.
    unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_fault as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut ours.sa_mask);
        let mut segv: libc::sigaction = std::mem::zeroed();
        let mut bus: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGSEGV, &ours, &mut segv) != 0 {
            log::warn!(
                "green: cannot handle stack overflows ({}): an overflow ends the process",
                std::io::Error::last_os_error()
            );
        }
        libc::sigaction(libc::SIGBUS, &ours, &mut bus);
        Previous { segv, bus }
    }
}

/// Marks `co`, whose guard is `guard`, as the coroutine this thread is
/// about to run; [`disarm`] once it suspended or ended.
pub(crate) fn arm(co: &Co, guard: (usize, usize)) {
    let armed = Armed {
        trap: co.trap_handler(),
        guard,
    };
    ARMED.with(|a| a.set(Some(armed)));
}

/// No coroutine runs on this thread (see [`arm`]).
pub(crate) fn disarm() {
    ARMED.with(|a| a.set(None));
}

/// The fault handler (async-signal-safe: it reads a thread-local, compares
/// addresses and writes the interrupted context; it neither allocates nor
/// locks).
extern "C" fn on_fault(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel hands a valid `siginfo_t` and `ucontext_t` to a
    // SA_SIGINFO handler, valid until it returns.
    let (addr, sp) = unsafe { ((*info).si_addr() as usize, stack_pointer(context)) };
    if let Some(armed) = ARMED.with(Cell::get) {
        let (lo, hi) = armed.guard;
        if (lo..hi).contains(&addr) && armed.trap.stack_ptr_in_bounds(sp) {
            ARMED.with(|a| a.set(None));
            // SAFETY: the fault hit the guard of the coroutine running on
            // this thread, its stack pointer inside that coroutine's stack
            // (checked just above, as corosensei requires); the coroutine
            // is alive (armed by its worker around `resume`, which holds
            // it). The stack is reset for the closure, which returns to
            // the worker at once; what the abandoned code owned is leaked,
            // which the worker and the documentation own up to. The
            // registers corosensei asks for are written into the
            // interrupted context before this handler returns.
            unsafe {
                let regs = armed.trap.setup_trap_handler(|| Ended::Overflowed);
                set_registers(context, regs);
            }
            return;
        }
    }
    // SAFETY: the same arguments, handed on unchanged.
    unsafe { chain(signal, info, context) };
}

/// Hands a fault that is not a coroutine's overflow to the disposition
/// installed before ours; with none (default or ignored), restores the
/// default and returns, so that the fault happens again and ends the
/// process as it would have without us.
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get().map(|p| {
        if signal == libc::SIGBUS {
            p.bus
        } else {
            p.segv
        }
    });
    match previous {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: the previous handler was installed for this signal
            // with these flags, so it has the signature they imply.
            unsafe {
                if p.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(p.sa_sigaction);
                    f(signal, info, context);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(p.sa_sigaction);
                    f(signal);
                }
            }
        }
        _ => {
            // SAFETY: a zeroed `sigaction` with SIG_DFL is the default
            // disposition.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe fn stack_pointer(context: *mut libc::c_void) -> usize {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the caller's context is a valid `ucontext_t`.
    unsafe { (*context).uc_mcontext.gregs[libc::REG_RSP as usize] as usize }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe fn set_registers(context: *mut libc::c_void, regs: TrapHandlerRegs) {
    let context = context.cast::<libc::ucontext_t>();
    let TrapHandlerRegs {
        rip,
        rsp,
        rbp,
        rdi,
        rsi,
    } = regs;
    // SAFETY: the caller's context is a valid `ucontext_t`.
    let gregs = unsafe { &mut (*context).uc_mcontext.gregs };
    gregs[libc::REG_RIP as usize] = rip as i64;
    gregs[libc::REG_RSP as usize] = rsp as i64;
    gregs[libc::REG_RBP as usize] = rbp as i64;
    gregs[libc::REG_RDI as usize] = rdi as i64;
    gregs[libc::REG_RSI as usize] = rsi as i64;
}

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
unsafe fn stack_pointer(context: *mut libc::c_void) -> usize {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the caller's context is a valid `ucontext_t`.
    unsafe { (*context).uc_mcontext.sp as usize }
}

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
unsafe fn set_registers(context: *mut libc::c_void, regs: TrapHandlerRegs) {
    let context = context.cast::<libc::ucontext_t>();
    let TrapHandlerRegs {
        pc,
        sp,
        x0,
        x1,
        x29,
        lr,
    } = regs;
    // SAFETY: the caller's context is a valid `ucontext_t`.
    let m = unsafe { &mut (*context).uc_mcontext };
    m.pc = pc;
    m.sp = sp;
    m.regs[0] = x0;
    m.regs[1] = x1;
    m.regs[29] = x29;
    m.regs[30] = lr;
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
unsafe fn stack_pointer(_: *mut libc::c_void) -> usize {
    0
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
unsafe fn set_registers(_: *mut libc::c_void, _: TrapHandlerRegs) {}

/// Bytes of the alternate signal stack given to a worker thread that has
/// none (or a smaller one).
const ALT_STACK: usize = 64 * 1024;

/// A worker thread's alternate signal stack, if it had to be made: taken
/// down when the worker ends.
pub(crate) struct AltStack(Option<(usize, usize)>);

impl AltStack {
    fn install() -> AltStack {
        // SAFETY: `sigaltstack` with a null new stack only reads the
        // current one into `old`, plain data.
        let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } == 0
            && old.ss_flags & libc::SS_DISABLE == 0
            && old.ss_size >= ALT_STACK / 4
        {
            return AltStack(None); // std's (or the embedder's) will do
        }
        // SAFETY: a fresh anonymous mapping of our own, then handed to the
        // kernel as this thread's signal stack; it stays mapped until the
        // guard drops, which first takes it back from the kernel.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if addr == libc::MAP_FAILED {
                return AltStack(None);
            }
            let stack = libc::stack_t {
                ss_sp: addr,
                ss_flags: 0,
                ss_size: ALT_STACK,
            };
            if libc::sigaltstack(&stack, std::ptr::null_mut()) != 0 {
                libc::munmap(addr, ALT_STACK);
                return AltStack(None);
            }
            AltStack(Some((addr as usize, ALT_STACK)))
        }
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if let Some((addr, len)) = self.0 {
            // SAFETY: this thread's signal stack is ours (installed by
            // `install`); it is disabled before it is unmapped, and no
            // signal handler runs on it now (we are not in one).
            unsafe {
                let off = libc::stack_t {
                    ss_sp: std::ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
                libc::sigaltstack(&off, std::ptr::null_mut());
                libc::munmap(addr as *mut libc::c_void, len);
            }
        }
    }
}
