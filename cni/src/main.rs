//! `leviathan-cni`: a container runtime's hook into leviathan. As a CNI
//! 1.1 plugin (containerd, CRI-O, Kubernetes, nerdctl) it reads
//! `CNI_COMMAND` and the network configuration on stdin; as a netavark
//! plugin (Podman 4+: `leviathan-cni netavark create|setup|teardown|info`,
//! or the binary installed under the name `leviathan-netavark`) it reads
//! its subcommand. Either way it asks the leviathan server, over its local
//! socket, to do the work, and prints the answer the runtime expects.
//!
//! ```text
//! http.rs      a small blocking HTTP/1.1 client (unix socket or TCP)
//! api.rs       the GraphQL requests: attach, detach, look up, health
//! spec.rs      the CNI environment, configuration, errors and results
//! cni.rs       ADD, DEL, CHECK, STATUS, GC, VERSION
//! netavark.rs  create, setup, teardown, info
//! kernel.rs    reading a container's namespace (interfaces, routes)
//! queue.rs     deletions kept for the server while it is down
//! ```
//!
//! Invariants: the plugin keeps no state but the bounded deletion queue;
//! it never changes the kernel itself; every failure is the runtime's
//! error object (CNI: `code`, `msg` on stdout, exit 1; netavark:
//! `{"error": ...}`), never a panic.
//!
//! A runtime starts the plugin once per container and waits for it, so
//! its start is part of every ADD: the binary has its own C `main`
//! ([`main`]) instead of Rust's start-up, whose stack-overflow handler
//! asks glibc for the main thread's stack, which reads and parses
//! `/proc/self/maps` (with the rest, about 0.4 ms of CPU in a process that
//! lives about a millisecond). Without that handler a stack overflow is a
//! plain SIGSEGV, and a panic's message names the thread `<unnamed>`.

// Unit tests run under the test harness's own main.
#![cfg_attr(not(test), no_main)]

mod api;
mod cni;
mod http;
mod kernel;
mod netavark;
mod queue;
mod spec;

use std::io::{Read, Write};
use std::process::ExitCode;

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin().take(spec::MAX_CONFIG + 1).read_to_end(&mut buf).map_err(|e| format!("reading stdin: {e}"))?;
    if buf.len() as u64 > spec::MAX_CONFIG {
        return Err(format!("the configuration on stdin is over {} bytes", spec::MAX_CONFIG));
    }
    Ok(buf)
}

fn print(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The process's entry, called by the C runtime with the arguments. It
/// does what the plugin needs of Rust's own start-up: descriptors 0, 1
/// and 2 open (so no file or socket of ours becomes stdout), and `SIGPIPE`
/// ignored (a runtime that stopped reading gets a write error, not a
/// killed plugin).
#[cfg_attr(not(test), no_mangle)]
extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    standard_descriptors();
    // SAFETY: setting a signal's disposition to SIG_IGN has no
    // preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: the C runtime passes `argc` strings in `argv`.
    let args = unsafe { arguments(argc, argv) };
    // Unwinding must not cross into the C runtime: a panic ends here.
    let code = std::panic::catch_unwind(|| run(&args)).unwrap_or(ExitCode::FAILURE);
    let _ = std::io::stdout().lock().flush();
    i32::from(code != ExitCode::SUCCESS)
}

/// The arguments as `main` was given them (any C library), lossily UTF-8.
///
/// # Safety
/// `argv` holds `argc` pointers to NUL-terminated strings (or is null).
unsafe fn arguments(argc: libc::c_int, argv: *const *const libc::c_char) -> Vec<String> {
    if argv.is_null() {
        return Vec::new();
    }
    (0..usize::try_from(argc).unwrap_or(0))
        // SAFETY: within `argc`, each entry is a C string (see above).
        .map(|i| unsafe { *argv.add(i) })
        .take_while(|p| !p.is_null())
        // SAFETY: a non-null entry is a NUL-terminated string.
        .map(|p| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .collect()
}

/// Opens `/dev/null` on whichever of descriptors 0, 1 and 2 is closed
/// (asked of `poll`, or of `fcntl` one by one where `poll` fails). Where
/// `/dev/null` cannot be opened either, the plugin cannot answer safely:
/// it ends.
fn standard_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: `fds` is an array of three pollfd that outlives the call.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0;
    for p in fds {
        let closed = if polled {
            p.revents & libc::POLLNVAL != 0
        } else {
            // SAFETY: F_GETFD on any number only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(p.fd, libc::F_GETFD) };
            flags == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
        };
        if !closed {
            continue;
        }
        // SAFETY: a NUL-terminated path; the lowest free descriptor is the
        // closed one, as descriptors below it are open by now.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd < 0 {
            std::process::abort();
        }
        if fd != p.fd {
            // SAFETY: both are descriptors of this process.
            unsafe {
                libc::dup2(fd, p.fd);
                libc::close(fd);
            }
        }
    }
}

fn run(args: &[String]) -> ExitCode {
    let invoked_as = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or_default().to_string();
    if invoked_as == "leviathan-netavark" {
        return netavark_main(&args[1..]);
    }
    if args.get(1).map(String::as_str) == Some("netavark") {
        return netavark_main(&args[2..]);
    }
    cni_main()
}

fn cni_main() -> ExitCode {
    let version_of = |stdin: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .unwrap_or_else(|| "1.1.0".into())
    };
    let stdin = match read_stdin() {
        Ok(s) => s,
        Err(m) => {
            print(&spec::CniError::new(spec::code::IO, m).to_json("1.1.0"));
            return ExitCode::FAILURE;
        }
    };
    let outcome = spec::Env::from_vars(|k| std::env::var(k).ok()).and_then(|env| cni::run(&env, &stdin));
    match outcome {
        Ok(Some(v)) => {
            print(&v);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            print(&e.to_json(&version_of(&stdin)));
            ExitCode::FAILURE
        }
    }
}

fn netavark_main(args: &[String]) -> ExitCode {
    let sub = args.first().map(String::as_str).unwrap_or("");
    let stdin = if sub == "info" { Ok(Vec::new()) } else { read_stdin() };
    let outcome = stdin.and_then(|s| netavark::run(sub, args.get(1).map(String::as_str), &s));
    match outcome {
        Ok(Some(v)) => {
            print(&v);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(m) => {
            print(&serde_json::json!({"error": m}));
            ExitCode::FAILURE
        }
    }
}
