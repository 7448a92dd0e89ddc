//! What a server process spends on the requests of a measurement, a
//! figure steadier than req/s on a machine others load too: its CPU
//! time (user + system, from `/proc/PID/stat`, on every Linux) and, where
//! `perf` can read the hardware counters, its instructions in user space
//! and in the kernel (`perf stat -p`; `n/a` without perf or counters, e.g.
//! in most virtual machines).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// CPU seconds a process has used so far (every thread, living or gone).
fn cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf only reads a constant of the system.
    let tick = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    (f.len() == 2).then(|| f.iter().sum::<u64>() as f64 / tick)
}

/// A measurement of one process under way.
pub struct Meter {
    pid: u32,
    cpu: Option<f64>,
    perf: Option<(Child, PathBuf)>,
}

impl Meter {
    /// Starts counting what `pid` spends (`perf stat` writes to a file in
    /// `dir`).
    pub fn start(pid: u32, dir: &Path) -> Meter {
        let out = dir.join(format!("perf-{pid}.csv"));
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", "instructions:u,instructions:k", "-p", &pid.to_string(), "-o"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        if perf.is_some() {
            // perf needs a moment to attach.
            std::thread::sleep(Duration::from_millis(300));
        }
        Meter { pid, cpu: cpu(pid), perf: perf.map(|p| (p, out)) }
    }

    /// Stops counting: what the process spent meanwhile.
    pub fn stop(self) -> Spent {
        let cpu = self.cpu.zip(cpu(self.pid)).map(|(a, b)| b - a);
        let instructions = self.perf.and_then(|(mut p, out)| {
            // SIGINT: perf writes its counts and exits.
            // SAFETY: kill only sends a signal to a child of ours.
            unsafe { libc::kill(p.id() as i32, libc::SIGINT) };
            p.wait().ok()?;
            counts(&std::fs::read_to_string(out).ok()?)
        });
        Spent { cpu, instructions }
    }
}

/// `perf stat -x ,` output: (user, kernel) instructions, when both were
/// counted.
fn counts(csv: &str) -> Option<(f64, f64)> {
    let find = |event: &str| {
        csv.lines().map(|l| l.split(',').collect::<Vec<_>>()).find(|f| f.get(2) == Some(&event))?[0].parse().ok()
    };
    Some((find("instructions:u")?, find("instructions:k")?))
}

/// What a process spent on a measurement.
#[derive(Default, Clone, Copy)]
pub struct Spent {
    /// CPU seconds.
    pub cpu: Option<f64>,
    /// Instructions in user space and in the kernel.
    pub instructions: Option<(f64, f64)>,
}

impl Spent {
    /// CPU µs per request, of `n` requests.
    pub fn cpu_us(&self, n: usize) -> Option<f64> {
        self.cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64)
    }

    /// "CPU 41.2 µs, 52,000 + 31,000 instructions (user + kernel)" per
    /// request, `n/a` where a figure is missing.
    pub fn per_request(&self, n: usize) -> String {
        let cpu = self.cpu_us(n).map_or("n/a".to_string(), |c| format!("{c:.1} µs"));
        let ins = match self.instructions.filter(|_| n > 0) {
            Some((u, k)) => format!("{:.0} + {:.0}", u / n as f64, k / n as f64),
            None => "n/a".to_string(),
        };
        format!("CPU {cpu}, instructions (user + kernel) {ins}")
    }
}
