//! `ssi rexec`, `ssi sh`, `ssi kill`: the tool side of global processes. They talk to this
//! node's daemon over its control socket; the daemon learns who asks from the kernel.
//!
//! `rexec` behaves like the command run here: stdin goes there, its stdout and stderr come
//! back each in order, SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 sent to this tool reach
//! it, and the tool exits with its exit code — or dies by the signal that killed it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::control::proto::{exec_in, exec_out, ExecIn, ExecStart, KillRequest, WinSize};
use crate::error::{Context, Error, Result};
use crate::{bail, failed};

pub struct RexecOptions {
    pub dir: PathBuf,
    /// None: the placement policy picks (`--any`).
    pub node: Option<u32>,
    pub tty: bool,
    pub cwd: Option<PathBuf>,
    pub argv: Vec<OsString>,
    /// `ssi run`: the command's binds go through the SAP server, as part of this service
    /// (name, policy) when one is given.
    /// `ssi run`: binds go through the SAP, as this role.
    pub interpose: Option<ssi_procmgmt::proto::Interpose>,
}

/// The node this tool is on: $SSI_NODE, else the node whose mountpoint holds the working
/// directory, else (a tool outside every node) the lowest live node in a majority.
pub fn local_node(cfg: &Config) -> Result<u32> {
    if let Ok(n) = std::env::var("SSI_NODE") {
        return n.parse().map_err(|_| failed!("SSI_NODE={n} is not a node id"));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some((id, _)) = cfg.nodes.iter().find(|(_, n)| cwd.starts_with(&n.mountpoint)) {
        return Ok(*id);
    }
    crate::local::answering_node(cfg).ok_or_else(|| failed!("no node of the cluster answers"))
}

/// The config of the node this tool is on (see `local_node`), in the cluster in `dir`.
pub fn this_node(dir: &Path) -> Result<crate::config::NodeConfig> {
    let cfg = Config::load(&crate::local::config_path(dir))?;
    let node = local_node(&cfg)?;
    cfg.node(node).cloned().map_err(Error::from)
}

pub(crate) async fn control(dir: &Path) -> Result<crate::control::ControlClient<tonic::transport::Channel>> {
    crate::control::connect(&this_node(dir)?.control_socket).await.map_err(Error::from)
}

fn umask() -> u32 {
    // There is no way to read the umask without setting it.
    // SAFETY: umask takes and returns a mode; setting it back at once leaves the process as it was.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

pub(crate) fn send(tx: &mpsc::Sender<ExecIn>, msg: exec_in::Msg) {
    let _ = tx.try_send(ExecIn { msg: Some(msg) });
}

/// Dies by `signal` (as the remote process did), else exits 128 + signal.
fn die_by(signal: i32) -> ! {
    // SAFETY: integer-only calls on this process, and a sigset_t that is a live, zeroed local passed to sigemptyset before use.
    unsafe {
        // No core dump of this tool for the remote process's SIGSEGV.
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

/// The terminal of stdin in raw mode for a `-t` session, restored on drop.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> Self {
        use nix::sys::termios::*;
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(saved) => {
                let mut raw = saved.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                RawTerminal(Some(saved))
            }
            Err(_) => RawTerminal(None),
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

fn window_size() -> (u32, u32) {
    // SAFETY: libc::winsize is four integers; all zeros is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into ws, a live local.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
        (ws.ws_row as u32, ws.ws_col as u32)
    } else {
        (24, 80)
    }
}

/// The first message of an exec session for `o` on `node` (0: the placement policy's
/// choice): the command, this tool's environment, working directory and umask.
pub(crate) fn exec_start(o: &RexecOptions, node: u32, tty: bool) -> Result<ExecStart> {
    if o.argv.is_empty() {
        bail!("no command given (ssi rexec [-n NODE[,NODE...] | --all | --any] [-t] [--cwd DIR] -- CMD...)");
    }
    let cwd = match &o.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().context("working directory")?,
    };
    let (rows, cols) = if tty { window_size() } else { (0, 0) };
    Ok(ExecStart {
        argv: o.argv.iter().map(|a| a.as_bytes().to_vec().into()).collect(),
        env: std::env::vars_os().map(|(k, v)| [k.into_vec(), b"=".to_vec(), v.into_vec()].concat().into()).collect(),
        cwd: cwd.as_os_str().as_bytes().to_vec().into(),
        cwd_given: o.cwd.is_some(),
        umask: umask(),
        node,
        tty,
        rows,
        cols,
        interpose: o.interpose.is_some(),
        service: o.interpose.as_ref().map(|i| i.service.clone()).unwrap_or_default(),
        policy: o.interpose.as_ref().map(|i| i.policy.clone()).unwrap_or_default(),
        weight: o.interpose.as_ref().map(|i| i.weight).unwrap_or_default(),
    })
}

/// The signals a tool passes on to the remote command.
pub(crate) const FORWARDED: [i32; 6] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

/// Runs `o` and exits as the remote process did.
pub fn rexec(o: RexecOptions) -> Result<std::convert::Infallible> {
    // SAFETY: isatty takes a descriptor number only.
    let tty = o.tty && unsafe { libc::isatty(0) } == 1;
    let start = exec_start(&o, o.node.unwrap_or(0), tty)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let code = rt.block_on(async move {
        let mut client = control(&o.dir).await?;
        let (tx, rx) = mpsc::channel::<ExecIn>(16);
        send(&tx, exec_in::Msg::Start(start));
        let mut answers = client.exec(ReceiverStream::new(rx)).await.map_err(|s| failed!("{}", s.message()))?.into_inner();
        let _raw = tty.then(RawTerminal::enter);
        // stdin: read on a thread of its own (it may be a terminal), one chunk at a time.
        let stdin_tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = stdin_tx.blocking_send(ExecIn { msg: Some(exec_in::Msg::Eof(true)) });
                        return;
                    }
                    Ok(n) => {
                        if stdin_tx.blocking_send(ExecIn { msg: Some(exec_in::Msg::Stdin(buf[..n].to_vec().into())) }).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        use tokio::signal::unix::{signal, SignalKind};
        for sig in FORWARDED {
            let mut st = signal(SignalKind::from_raw(sig))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while st.recv().await.is_some() {
                    send(&tx, exec_in::Msg::Signal(sig));
                }
            });
        }
        let mut winch = signal(SignalKind::window_change())?;
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        loop {
            tokio::select! {
                m = answers.message() => {
                    let m = m.map_err(|s| failed!("{}", s.message()))?;
                    match m.and_then(|m| m.msg) {
                        // A closed stdout (`| head`) is the reader's business, as locally.
                        Some(exec_out::Msg::Stdout(d)) => { let _ = stdout.write_all(&d).and_then(|_| stdout.flush()); }
                        Some(exec_out::Msg::Stderr(d)) => { let _ = stderr.write_all(&d); }
                        Some(exec_out::Msg::Started(_)) => {}
                        Some(exec_out::Msg::Exit(e)) => return Ok::<_, Error>(if e.code < 0 { -e.signal } else { e.code }),
                        Some(exec_out::Msg::Error(e)) => bail!("{e}"),
                        None => bail!("the daemon closed the session without an exit status"),
                    }
                }
                _ = winch.recv(), if tty => {
                    let (rows, cols) = window_size();
                    send(&tx, exec_in::Msg::Resize(WinSize { rows, cols }));
                }
            }
        }
    })?;
    drop(rt);
    if code < 0 {
        die_by(-code);
    }
    std::process::exit(code)
}

/// `ssi sh -c CMD`: make's SHELL. Runs `/bin/sh -c CMD` on the node the placement policy
/// picks, in the same directory of the global namespace — except a command that holds make's
/// job server (see `holds_job_server`), which runs here.
pub fn sh(dir: PathBuf, args: Vec<OsString>) -> Result<std::convert::Infallible> {
    // make passes .SHELLFLAGS first (default "-c"); anything sh accepts is passed through.
    if args.is_empty() {
        bail!("ssi sh runs commands remotely; give -c 'CMD' (an interactive shell is `ssi rexec -t -- sh`)");
    }
    if holds_job_server(std::env::var("MAKEFLAGS").ok().as_deref()) {
        use std::os::unix::process::CommandExt;
        let e = std::process::Command::new("/bin/sh").args(&args).exec();
        bail!("/bin/sh: {e}");
    }
    let mut argv = vec![OsString::from("/bin/sh")];
    argv.extend(args);
    rexec(RexecOptions { dir, node: None, tty: false, cwd: None, argv, interpose: None })
}

/// Whether this command was given make's job server: a recursive `$(MAKE)` (or a `+` line).
/// GNU make hands the job server's pipe (`--jobserver-auth=R,W` in MAKEFLAGS) to those
/// commands only, and the pipe cannot cross to another node: a sub-make started elsewhere
/// finds it missing and falls back to `-j1` (redis's `cd src && $(MAKE) all` built its whole
/// tree one compile at a time that way). So such a command runs on this node, and the
/// compiles it starts go out through `ssi sh` again, in parallel.
fn holds_job_server(makeflags: Option<&str>) -> bool {
    let Some(flags) = makeflags else { return false };
    let Some(fds) =
        flags.split_whitespace().find_map(|w| w.strip_prefix("--jobserver-auth=").or_else(|| w.strip_prefix("--jobserver-fds=")))
    else {
        return false;
    };
    // make 4.4's named-pipe form (`fifo:PATH`) is passed to every command alike, recursive or
    // not: nothing tells a sub-make apart. `make --jobserver-style=pipe` gives the form above.
    let Some((r, w)) = fds.split_once(',') else { return false };
    let pipe = |fd: &str| {
        fd.parse::<i32>().is_ok_and(|fd| {
            // SAFETY: libc::stat is a plain C struct; all zeros is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes one stat into st, a live local; a closed fd only fails.
            fd >= 0 && unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO
        })
    };
    pipe(r) && pipe(w)
}

/// A signal by number, name or SIG-name (`9`, `KILL`, `SIGKILL`).
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (0..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.strip_prefix("SIG").unwrap_or(s).to_ascii_uppercase();
    let sig: nix::sys::signal::Signal = format!("SIG{name}").parse().map_err(|_| failed!("unknown signal {s}"))?;
    Ok(sig as i32)
}

/// `ssi kill [-SIGNAL] GPID...`: each as the caller's own kill(2) on the process's node.
pub fn kill(dir: PathBuf, args: Vec<String>) -> Result<()> {
    let (signal, gpids) = match args.first() {
        Some(a) if a.starts_with('-') && a.len() > 1 => (parse_signal(&a[1..])?, &args[1..]),
        _ => (libc::SIGTERM, &args[..]),
    };
    if gpids.is_empty() {
        bail!("usage: ssi kill [-SIGNAL] GPID...");
    }
    let gpids: Vec<u64> = gpids.iter().map(|g| g.parse().map_err(|_| failed!("{g} is not a global pid"))).collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut client = control(&dir).await?;
        let mut failed = Vec::new();
        for gpid in gpids {
            if let Err(s) = client.kill(KillRequest { gpid, signal }).await {
                failed.push(s.message().to_string());
            }
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::holds_job_server;

    #[test]
    fn a_command_holds_the_job_server_only_with_its_pipe_open() {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) writes two descriptors into the two-element array it is given.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let flags = format!(" -j8 --jobserver-auth={},{}", fds[0], fds[1]);
        assert!(holds_job_server(Some(&flags)));
        assert!(holds_job_server(Some(&format!("j --jobserver-fds={},{} -- X=1", fds[0], fds[1]))));
        // make 4.3 passes MAKEFLAGS to every command, the pipe only to recursive ones.
        // SAFETY: both descriptors came from pipe(2) above and nothing else owns them.
        unsafe { libc::close(fds[0]) };
        // SAFETY: as above.
        unsafe { libc::close(fds[1]) };
        assert!(!holds_job_server(Some(&flags)));
        // Open, but not a pipe (stdin here is not one in every test harness: use a file).
        let f = std::fs::File::open("/proc/self/status").unwrap();
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        assert!(!holds_job_server(Some(&format!("--jobserver-auth={fd},{fd}"))));
        assert!(!holds_job_server(Some("-j8 --jobserver-auth=fifo:/tmp/GMfifo1")));
        assert!(!holds_job_server(Some("-j8")));
        assert!(!holds_job_server(None));
    }
}
