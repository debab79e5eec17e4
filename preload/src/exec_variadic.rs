//! The variadic exec calls, `execl`, `execlp` and `execle`: glibc builds
//! their argv and calls its internal execve, which no preload can see, so
//! the sockets would not be handed over. Stable Rust cannot define a
//! variadic function; each entry is a naked x86-64 trampoline that lays the
//! register arguments out beside the stack ones and calls a Rust body, which
//! walks them (System V: the first six integer arguments in registers, the
//! rest on the stack in order) up to the NULL, then calls our execv,
//! execvp or execve.

use libc::{c_char, c_int};

/// How many arguments a variadic exec may pass (glibc has no limit; 4096
/// pointers are 32 KiB of stack).
const MAX_ARGS: usize = 4096;

/// Reads the n-th variadic pointer: five were in registers (rsi, rdx, rcx,
/// r8, r9, spilled to `regs`), the rest follow at `stack`.
///
/// # Safety
/// `regs` and `stack` come from the trampoline, and the caller passed at
/// least n+1 pointers (checked by stopping at the NULL).
unsafe fn arg(regs: *const *const c_char, stack: *const *const c_char, n: usize) -> *const c_char {
    // SAFETY: see above.
    unsafe {
        if n < 5 {
            *regs.add(n)
        } else {
            *stack.add(n - 5)
        }
    }
}

/// Which exec a trampoline stands for.
#[derive(Clone, Copy)]
enum Kind {
    L,
    Lp,
    Le,
}

unsafe fn body(
    path: *const c_char,
    regs: *const *const c_char,
    stack: *const *const c_char,
    kind: Kind,
) -> c_int {
    let mut argv = [std::ptr::null::<c_char>(); MAX_ARGS];
    let mut n = 0;
    loop {
        // SAFETY: the caller's argument list ends with a NULL.
        let a = unsafe { arg(regs, stack, n) };
        if n == MAX_ARGS - 1 && !a.is_null() {
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = libc::E2BIG };
            return -1;
        }
        argv[n] = a;
        n += 1;
        if a.is_null() {
            break;
        }
    }
    // SAFETY: a NUL-terminated argv; execle's envp follows its NULL.
    unsafe {
        match kind {
            Kind::L => crate::exec::execv(path, argv.as_ptr()),
            Kind::Lp => crate::exec::execvp(path, argv.as_ptr()),
            Kind::Le => {
                let envp = arg(regs, stack, n).cast::<*const c_char>();
                crate::exec::execve(path, argv.as_ptr(), envp)
            }
        }
    }
}

unsafe extern "C" fn execl_body(
    p: *const c_char,
    r: *const *const c_char,
    s: *const *const c_char,
) -> c_int {
    // SAFETY: the trampoline's layout.
    unsafe { body(p, r, s, Kind::L) }
}

unsafe extern "C" fn execlp_body(
    p: *const c_char,
    r: *const *const c_char,
    s: *const *const c_char,
) -> c_int {
    // SAFETY: the trampoline's layout.
    unsafe { body(p, r, s, Kind::Lp) }
}

unsafe extern "C" fn execle_body(
    p: *const c_char,
    r: *const *const c_char,
    s: *const *const c_char,
) -> c_int {
    // SAFETY: the trampoline's layout.
    unsafe { body(p, r, s, Kind::Le) }
}

/// The trampoline: spill rsi, rdx, rcx, r8 and r9 (the first five
/// variadic pointers) into a frame, point rsi at them and rdx at the
/// caller's stack arguments, keep rdi (path), call the body, return its int.
macro_rules! trampoline {
    ($name:ident, $body:ident) => {
        /// A variadic exec call; see the module documentation.
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                "push rbp",
                "mov rbp, rsp",
                "sub rsp, 48",
                "mov [rsp], rsi",
                "mov [rsp + 8], rdx",
                "mov [rsp + 16], rcx",
                "mov [rsp + 24], r8",
                "mov [rsp + 32], r9",
                "mov rsi, rsp",
                "lea rdx, [rbp + 16]",
                "call {body}",
                "leave",
                "ret",
                body = sym $body,
            )
        }
    };
}

trampoline!(execl, execl_body);
trampoline!(execlp, execlp_body);
trampoline!(execle, execle_body);
