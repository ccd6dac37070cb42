//! One wrapper for every child process a test starts: a Gatehouse binary in one of its
//! roles, nats-server, a backend.
//!
//! A [`Process`] is a program with its arguments and environment. Its stdout and stderr
//! go to one log file (in a temporary directory of its own unless given one), appended
//! to across restarts, so a test can wait for a line ([`wait_for_output`]), read what it
//! printed ([`output`], [`output_of_this_run`]) and show it when something goes wrong:
//! every wait's panic message ends with the process's last output, and a process
//! dropped while its test panics prints it too.
//!
//! The environment is the test's, minus every `GATEHOUSE_*` and `OTEL_*` variable (a
//! developer's shell must not change what a test runs), plus `RUST_LOG=info`, plus what
//! the builder was given. The process is killed (SIGKILL) on drop; [`kill`] does the same
//! (a crash: nothing acknowledged may depend on a clean exit), [`interrupt`] and
//! [`terminate`] send SIGINT and SIGTERM and return the exit status, [`restart`] starts
//! the same command again.
//!
//! ```no_run
//! use gatehouse_testkit::process::Process;
//!
//! let mut control = Process::builder("control", "target/debug/gatehouse")
//!     .args(["control", "--listen", "127.0.0.1:50051"])
//!     .env("RUST_LOG", "warn")
//!     .spawn();
//! control.wait_for_output("control ready on");
//! control.restart();
//! control.wait_for_output_count("control ready on", 2);
//! ```
//!
//! # Shared state
//!
//! None: each `Process` owns one child and one log file.
//!
//! [`wait_for_output`]: Process::wait_for_output
//! [`output`]: Process::output
//! [`output_of_this_run`]: Process::output_of_this_run
//! [`kill`]: Process::kill
//! [`interrupt`]: Process::interrupt
//! [`terminate`]: Process::terminate
//! [`restart`]: Process::restart

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use crate::poll::{CONVERGE, Check, Poll};

/// How much of a process's output a panic message shows (its end).
const SHOWN: usize = 16 * 1024;

/// Environment variables not inherited from the test's environment: they configure the
/// product, and a test sets what it needs explicitly.
const NOT_INHERITED: [&str; 2] = ["GATEHOUSE_", "OTEL_"];

/// How to start a [`Process`].
#[must_use = "a Builder starts nothing until `spawn`"]
pub struct Builder {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Builder {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets a variable (given ones win over the defaults, `RUST_LOG` included).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(mut self, envs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in envs {
            self = self.env(key, value);
        }
        self
    }

    /// Writes the log to `<dir>/<name>.log` (default: a temporary directory of its own).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// How long the waits may take (default [`CONVERGE`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the process.
    ///
    /// # Panics
    ///
    /// If the program cannot be started (not found, not executable).
    pub fn spawn(self) -> Process {
        let (log_dir, temp) = match self.log_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("gatehouse-process-")
                    .tempdir()
                    .expect("cannot create a temporary directory for a process log");
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&log_dir).expect("cannot create the process log directory");
        let mut process = Process {
            log: log_dir.join(format!("{}.log", self.name)),
            name: self.name,
            program: self.program,
            args: self.args,
            envs: self.envs,
            timeout: self.timeout,
            child: None,
            run_start: 0,
            _temp: temp,
        };
        process.start();
        process
    }
}

/// A child process whose output goes to a log file; killed on drop.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: PathBuf,
    timeout: Duration,
    /// `None` while stopped.
    child: Option<Child>,
    /// The log's length when this run started.
    run_start: usize,
    _temp: Option<tempfile::TempDir>,
}

impl Process {
    /// A process named `name` (in messages and as its log file's name) running
    /// `program`.
    pub fn builder(name: impl Into<String>, program: impl Into<PathBuf>) -> Builder {
        Builder {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            log_dir: None,
            timeout: CONVERGE,
        }
    }

    /// `program args` with `envs`, its log in `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: impl Into<PathBuf>,
        log_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Process {
        Process::builder(name, program)
            .args(args)
            .envs(envs.iter().copied())
            .log_dir(log_dir)
            .spawn()
    }

    /// Starts the command again (after [`kill`](Self::kill), [`interrupt`](Self::interrupt)
    /// or an exit), appending to the same log.
    ///
    /// # Panics
    ///
    /// If it is running, or cannot be started.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        self.run_start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let err = log
            .try_clone()
            .expect("cannot duplicate the log file handle");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if NOT_INHERITED.iter().any(|prefix| name.starts_with(prefix)) {
                command.env_remove(&key);
            }
        }
        command.env("RUST_LOG", "info");
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({}): {e}",
                self.name,
                self.program.display()
            )
        });
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL, like a crash) and waits for it; then starts it again.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The running child's pid.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file: stdout and stderr of every run.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed, across restarts.
    pub fn output(&self) -> String {
        read(&self.log)
    }

    /// What the current (or last) run printed.
    pub fn output_of_this_run(&self) -> String {
        let output = self.output();
        output.get(self.run_start..).unwrap_or_default().to_string()
    }

    /// Whether the child is running (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until `ready` holds; returns its output.
    ///
    /// # Panics
    ///
    /// If the process exits first, or at the deadline; with the process's output.
    pub fn wait_until<C: Check>(&mut self, what: &str, ready: impl FnMut() -> C) -> C::Output {
        self.poll(what).until(ready)
    }

    /// [`wait_until`](Self::wait_until) for an async condition.
    pub async fn wait_until_async<C, F>(
        &mut self,
        what: &str,
        ready: impl FnMut() -> F,
    ) -> C::Output
    where
        C: Check,
        F: Future<Output = C>,
    {
        self.poll(what).until_async(ready).await
    }

    /// Waits until this run has printed `text`.
    pub fn wait_for_output(&mut self, text: &str) {
        self.wait_for_line(text);
    }

    /// Waits until this run has printed a line containing `text`; returns the line.
    pub fn wait_for_line(&mut self, text: &str) -> String {
        let (log, run_start) = (self.log.clone(), self.run_start);
        self.wait_until(&format!("printing {text:?}"), || {
            read(&log)
                .get(run_start..)
                .and_then(|run| run.lines().find(|l| l.contains(text)).map(str::to_string))
        })
    }

    /// Waits until the log (across restarts) holds `text` `count` times.
    pub fn wait_for_output_count(&mut self, text: &str, count: usize) {
        let log = self.log.clone();
        self.wait_until(&format!("printing {text:?} x{count}"), || {
            read(&log).matches(text).count() >= count
        });
    }

    /// Waits for the process to exit on its own; its status.
    ///
    /// # Panics
    ///
    /// If it is not running, or is still running at the deadline (it is then killed).
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let name = self.name.clone();
        let log = self.log.clone();
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} is not running"));
        let status = Poll::new(format!("{name} to exit"))
            .timeout(self.timeout)
            .context(move || shown(&name, &log))
            .until(|| child.try_wait().expect("cannot wait for a child"));
        self.child = None;
        status
    }

    /// SIGKILL (like a crash), and waits for the process. Does nothing if it is stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only if the process has already exited: fine either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit status.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal(libc::SIGINT);
        self.wait_for_exit()
    }

    /// Sends SIGTERM (what `docker stop` sends) and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_for_exit()
    }

    fn signal(&mut self, signal: libc::c_int) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: a plain syscall on our own child's pid, which cannot have been reaped
        // (and so reused) because we have not waited on it.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// A wait that gives up when the process exits and shows its output on failure.
    fn poll(&mut self, what: &str) -> Poll<'_> {
        let name = self.name.clone();
        let log = self.log.clone();
        let child = &mut self.child;
        let exited_name = name.clone();
        Poll::new(format!("{name} {what}"))
            .timeout(self.timeout)
            .context(move || shown(&name, &log))
            .abort_if(move || match child.as_mut().map(Child::try_wait) {
                None => Some(format!("{exited_name} is not running")),
                Some(Ok(Some(status))) => Some(format!("{exited_name} exited ({status})")),
                Some(_) => None,
            })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", shown(&self.name, &self.log));
        }
        self.kill();
    }
}

/// The end of a log, framed for a panic message.
fn shown(name: &str, log: &Path) -> String {
    let output = read(log);
    let mut from = output.len().saturating_sub(SHOWN);
    while !output.is_char_boundary(from) {
        from += 1;
    }
    let cut = if from > 0 { "[...]\n" } else { "" };
    format!(
        "--- output of {name} ({}) ---\n{cut}{}\n--- end of {name} ---",
        log.display(),
        &output[from..]
    )
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Runs a command to its end; its output.
///
/// # Panics
///
/// If it cannot be started (with a hint: `scripts/test.sh` installs the tools tests use).
pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run scripts/test.sh to install it): {e}",
                program.to_string_lossy()
            )
        })
}

/// Runs a command that must succeed; its stdout.
///
/// # Panics
///
/// If it fails, with its stderr and stdout.
pub fn run_ok(program: impl AsRef<OsStr>, args: &[&str]) -> String {
    let output = run(&program, args);
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}): {}\n{}",
        program.as_ref().to_string_lossy(),
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Process {
        Process::builder("sh", "sh").args(["-c", script]).spawn()
    }

    #[test]
    fn output_and_restarts() {
        let mut p = Process::builder("sh", "sh")
            .args([
                "-c",
                "echo \"run $GATEHOUSE_GIVEN\"; echo err >&2; exec sleep 60",
            ])
            .env("GATEHOUSE_GIVEN", "given")
            .spawn();
        p.wait_for_output("err");
        assert!(
            p.output().contains("run given\n"),
            "given variables are set"
        );
        p.restart();
        p.wait_for_output_count("run", 2);
        assert_eq!(p.output_of_this_run().matches("run").count(), 1);
        let status = p.terminate();
        assert!(!status.success());
        assert!(!p.is_running());
    }

    #[test]
    fn a_wait_gives_up_when_the_process_exits() {
        let mut p = sh("echo bye; exit 3");
        let panic =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.wait_for_output("never")))
                .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("sh exited"), "{message}");
        assert!(message.contains("bye"), "the output is shown: {message}");
    }
}
