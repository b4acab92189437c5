//! A scene: one test's temporary folder, the processes started in it, and their logs.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{COMMAND_TIMEOUT, Context as _, Result, fail, find_program};

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

/// One test's temporary folder and the long-running processes started in it. Dropping it stops
/// the processes (last started first), unmounts whatever is still mounted below the folder and
/// removes the folder.
pub(crate) struct Scene {
    procs: Vec<Proc>,
    logs: PathBuf,
    commands: usize,
    root: tempfile::TempDir,
}

impl Scene {
    pub(super) fn new(test: &str) -> Result<Scene> {
        // Under /tmp rather than $TMPDIR: unix socket paths must stay under 108 bytes, and
        // dockerd's overlay2 needs a real file system under its data root.
        let root = tempfile::Builder::new()
            .prefix(&format!("hoard-e2e-{}-", &test[..test.len().min(12)]))
            .tempdir_in("/tmp")
            .context("creating the test folder under /tmp")?;
        let logs = root.path().join("logs");
        fs::create_dir(&logs).context("creating the logs folder")?;
        Ok(Scene {
            procs: Vec::new(),
            logs,
            commands: 0,
            root,
        })
    }

    /// A path inside the test folder.
    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    /// A new folder inside the test folder.
    pub(crate) fn dir(&self, relative: &str) -> Result<PathBuf> {
        let dir = self.path(relative);
        fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Starts a long-running process with stdout and stderr in `logs/<name>.log` (appended to, so
    /// a process restarted under the same name keeps the earlier log). `grace` is how long
    /// [`Scene::stop`] waits after SIGTERM before SIGKILL (zero: SIGKILL at once).
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        mut command: Command,
        grace: Duration,
    ) -> Result<()> {
        let log = self.logs.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .context(format!("opening {}", log.display()))?;
        let err = out.try_clone().context("cloning a log file handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(format!("starting {name}: {command:?}"))?;
        eprintln!("e2e: started {name} (pid {})", child.id());
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
            grace,
        });
        Ok(())
    }

    /// Fails if the process `name` has exited.
    pub(crate) fn check_running(&mut self, name: &str) -> Result<()> {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .context(format!("no process named {name}"))?;
        match proc.child.try_wait().context(format!("polling {name}"))? {
            None => Ok(()),
            Some(status) => fail(format!(
                "{name} exited early ({status}); its log:\n{}",
                tail(&proc.log, 40)
            )),
        }
    }

    /// Stops the process `name` by its PID and waits for it.
    pub(crate) fn stop(&mut self, name: &str) -> Result<()> {
        let index = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .context(format!("no process named {name}"))?;
        let mut proc = self.procs.remove(index);
        terminate(&mut proc);
        Ok(())
    }

    /// Runs a short command to completion (killed after `timeout`); stdout and stderr are kept in
    /// `logs/`. Fails unless it exits with status 0.
    pub(crate) fn exec(
        &mut self,
        what: &str,
        command: &mut Command,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let (status, stdout, stderr) = self.exec_status(what, command, timeout)?;
        if !status.success() {
            return fail(format!(
                "{what} failed ({status}): {command:?}\nstderr:\n{stderr}\nstdout:\n{}",
                String::from_utf8_lossy(&stdout)
            ));
        }
        Ok(stdout)
    }

    /// Like [`Scene::exec`] with the default timeout, returning stdout as text.
    pub(crate) fn exec_text(&mut self, what: &str, command: &mut Command) -> Result<String> {
        let stdout = self.exec(what, command, COMMAND_TIMEOUT)?;
        String::from_utf8(stdout).context(format!("{what}: stdout is not UTF-8"))
    }

    /// Runs a command to completion and returns its status, stdout and stderr whatever the status.
    pub(crate) fn exec_status(
        &mut self,
        what: &str,
        command: &mut Command,
        timeout: Duration,
    ) -> Result<(ExitStatus, Vec<u8>, String)> {
        let started = self.start_logged(what, command)?;
        started.finish(what, Instant::now() + timeout, timeout)
    }

    /// Runs commands at once, each to completion, and returns each one's status, stdout and
    /// stderr whatever the status; fails if any is still running after `timeout`.
    pub(crate) fn exec_all(
        &mut self,
        what: &str,
        commands: Vec<Command>,
        timeout: Duration,
    ) -> Result<Vec<(ExitStatus, Vec<u8>, String)>> {
        let mut running = Vec::new();
        for mut command in commands {
            running.push(self.start_logged(what, &mut command)?);
        }
        let deadline = Instant::now() + timeout;
        running
            .into_iter()
            .map(|started| started.finish(what, deadline, timeout))
            .collect()
    }

    /// Starts a command with its stdout and stderr in files of the scene's logs.
    fn start_logged(&mut self, what: &str, command: &mut Command) -> Result<Started> {
        self.commands += 1;
        let stem = format!("cmd{:02}-{}", self.commands, slug(what));
        let out_path = self.logs.join(format!("{stem}.out"));
        let err_path = self.logs.join(format!("{stem}.err"));
        let out = File::create(&out_path).context("creating a command log")?;
        let err = File::create(&err_path).context("creating a command log")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(format!("{what}: starting {command:?}"))?;
        Ok(Started {
            child,
            described: format!("{command:?}"),
            out_path,
            err_path,
        })
    }

    /// What a process started with [`Scene::spawn`] has logged so far.
    pub(crate) fn log(&self, name: &str) -> String {
        fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The access-log lines (`hoard::log: request ...`) the hoard process `name` has written so far.
    pub(crate) fn access_log(&self, name: &str) -> Vec<String> {
        self.log(name)
            .lines()
            .filter(|l| l.contains("hoard::log: request "))
            .map(str::to_owned)
            .collect()
    }

    pub(super) fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.logs) else {
            return;
        };
        // The long-running processes' logs; a failed command's stderr is in its error already.
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        for path in paths {
            eprintln!("===== {} =====\n{}", path.display(), tail(&path, 60));
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        while let Some(mut proc) = self.procs.pop() {
            terminate(&mut proc);
        }
        unmount_below(self.root.path());
    }
}

fn terminate(proc: &mut Proc) {
    if matches!(proc.child.try_wait(), Ok(Some(_))) {
        return;
    }
    if !proc.grace.is_zero() {
        let pid = proc.child.id().to_string();
        let sent = Command::new(find_program("kill").unwrap_or_else(|| "/bin/kill".into()))
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            let deadline = Instant::now() + proc.grace;
            while Instant::now() < deadline {
                if matches!(proc.child.try_wait(), Ok(Some(_))) {
                    eprintln!("e2e: stopped {}", proc.name);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = proc.child.kill();
    let _ = proc.child.wait();
    eprintln!("e2e: killed {}", proc.name);
}

/// Unmounts everything mounted at or below `root` (deepest first). dockerd normally cleans up on
/// SIGTERM; this is for when it was killed.
fn unmount_below(root: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return;
    };
    let root = root.to_string_lossy().into_owned();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(unescape_mount_path)
        .filter(|p| *p == root || p.starts_with(&format!("{root}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let umount = find_program("umount").unwrap_or_else(|| "/bin/umount".into());
    for point in points {
        let unmounted = Command::new(&umount)
            .arg(&point)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new(&umount).args(["-l", &point]).status();
        }
    }
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A command started by [`Scene::start_logged`].
struct Started {
    child: Child,
    described: String,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Started {
    /// Waits for the command until `deadline` (killing it then) and reads what it wrote.
    fn finish(
        mut self,
        what: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(ExitStatus, Vec<u8>, String)> {
        let status = loop {
            if let Some(status) = self.child.try_wait().context(format!("{what}: waiting"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return fail(format!(
                    "{what} did not finish within {timeout:?}: {}\nstderr:\n{}",
                    self.described,
                    tail(&self.err_path, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = fs::read(&self.out_path).context("reading a command's stdout")?;
        let stderr =
            String::from_utf8_lossy(&fs::read(&self.err_path).unwrap_or_default()).into_owned();
        Ok((status, stdout, stderr))
    }
}
